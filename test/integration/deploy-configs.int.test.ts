import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { parse } from 'yaml';
import { loadConfig } from '../../hub/src/config';
import { ROOT } from '../helpers/processes';

type Compose = {
  services: Record<string, Record<string, unknown>>;
  volumes?: Record<string, unknown>;
};
const readCompose = (): Compose =>
  parse(readFileSync(join(ROOT, 'docker', 'compose.yaml'), 'utf8'), { merge: true }) as Compose;
const DOCKERFILES = ['hub.Dockerfile', 'sidecar.Dockerfile'];
const readDockerfile = (name: string): string => readFileSync(join(ROOT, 'docker', name), 'utf8');

/**
 * `.dockerignore` as Docker applies it (moby's patternmatcher): patterns from the context root,
 * `*` within a path segment, `**` across segments, `!` re-includes, the last matching pattern
 * wins, and a path is excluded when it or one of its parent directories is.
 */
function dockerIgnore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negate = line.startsWith('!');
      const pattern = posix.normalize(negate ? line.slice(1).trim() : line).replace(/^\/+/, '');
      let source = '';
      for (let i = 0; i < pattern.length; i++) {
        const ch = pattern[i]!;
        if (ch === '*' && pattern[i + 1] === '*') {
          i++;
          if (pattern[i + 1] === '/') i++;
          source += i + 1 >= pattern.length ? '.*' : '(.*/)?';
        } else if (ch === '*') source += '[^/]*';
        else if (ch === '?') source += '[^/]';
        else source += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negate, regex: new RegExp(`^${source}$`) };
    });
  return (path) => {
    const parts = path.split('/');
    let excluded = false;
    for (const { negate, regex } of rules) {
      const hit = parts.some((_, i) => regex.test(parts.slice(0, i + 1).join('/')));
      if (hit) excluded = !negate;
    }
    return excluded;
  };
}

/** The files of the build context (the repository root less what `.dockerignore` excludes). */
function contextFiles(excluded: (path: string) => boolean, dir = ''): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (excluded(path)) return []; // no `!` pattern re-includes anything under an excluded dir
    return entry.isDirectory() ? contextFiles(excluded, path) : [path];
  });
}

/** No Docker engine runs here: these checks are what can be proven about the files without one. */
describe('deployment files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'agentcom-deploy-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const render = (kind: 'compose' | 'loopback'): string =>
    execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        kind === 'compose'
          ? "import { renderHaproxyConfig, COMPOSE_HAPROXY } from './scripts/haproxy-config.mjs'; process.stdout.write(renderHaproxyConfig(COMPOSE_HAPROXY));"
          : "import { renderHaproxyConfig } from './scripts/haproxy-config.mjs'; process.stdout.write(renderHaproxyConfig({ bind: '127.0.0.1:18090', statsBind: '127.0.0.1:18404', servers: [1,2,3].map((n) => ({ name: 'hub' + n, address: '127.0.0.1:1810' + n })) }));",
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );

  it('compose: Redis with AOF and noeviction, 3 hubs with health checks, HAProxy gated on healthy hubs, a sidecar', () => {
    const { services } = readCompose();
    expect(Object.keys(services).sort()).toEqual([
      'haproxy',
      'hub1',
      'hub2',
      'hub3',
      'redis',
      'sidecar',
    ]);
    const redisCommand = (services.redis!.command as string[]).join(' ');
    expect(redisCommand).toContain('--appendonly yes');
    expect(redisCommand).toContain('--maxmemory-policy noeviction');
    for (const name of ['hub1', 'hub2', 'hub3']) {
      const hub = services[name]!;
      expect(hub).toMatchObject({
        init: true,
        depends_on: { redis: { condition: 'service_healthy' } },
      });
      expect(JSON.stringify(hub.healthcheck)).toContain('/readyz');
      expect(hub.environment).toMatchObject({
        REDIS_URL: 'redis://redis:6379',
        PORT: '8080',
        HUB_ID: name,
        TRUST_PROXY: '1',
      });
      expect(hub.ports).toBeUndefined(); // reachable through HAProxy only
    }
    expect(services.haproxy).toMatchObject({
      ports: ['8080:8080', '8404:8404'],
      depends_on: {
        hub1: { condition: 'service_healthy' },
        hub2: { condition: 'service_healthy' },
        hub3: { condition: 'service_healthy' },
      },
    });
    expect(services.sidecar!.environment).toMatchObject({ AGENTCOM_HUB: 'http://haproxy:8080' });
  });

  it('Dockerfile: multi-stage, non-root, exec-form CMD with node, HEALTHCHECK on /healthz', () => {
    const dockerfile = readFileSync(join(ROOT, 'docker', 'hub.Dockerfile'), 'utf8');
    expect(dockerfile.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^CMD \["node", "hub\/dist\/main\.js"\]$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK [\s\S]*\/healthz/m);
    expect(dockerfile).toContain('hub/src/redis/lua');
  });

  it('docker/haproxy.cfg is the template rendered for compose, and haproxy -c accepts it and the loopback rendering', () => {
    expect(readFileSync(join(ROOT, 'docker', 'haproxy.cfg'), 'utf8')).toBe(render('compose'));
    const loopback = join(dir, 'haproxy.cfg');
    writeFileSync(loopback, render('loopback'));
    for (const file of [join(ROOT, 'docker', 'haproxy.cfg'), loopback]) {
      const check = spawnSync('haproxy', ['-c', '-f', file], { encoding: 'utf8' });
      expect({ file, status: check.status, out: check.status === 0 ? '' : check.stderr }).toEqual({
        file,
        status: 0,
        out: '',
      });
    }
    const text = render('loopback');
    expect(text).toContain('option httpchk GET /readyz');
    expect(text).toContain('timeout tunnel 1h');
  });

  it('HAProxy keeps the connections of a server it marks down, and bounds the old worker of a reload', () => {
    for (const kind of ['compose', 'loopback'] as const) {
      const text = render(kind).replace(/#.*$/gm, '');
      // marked down (a stopping replica, or every replica while Redis stalls: /readyz 503) must
      // not reset its websockets and requests in flight: the hub closes its own
      expect({ kind, cuts: /shutdown-sessions|on-marked-down/.test(text) }).toEqual({
        kind,
        cuts: false,
      });
      const global = /^global\n((?:[ \t].*\n|\n)*)/m.exec(text)?.[1] ?? '';
      expect({ kind, hardStop: /^\s+hard-stop-after (\S+)$/m.exec(global)?.[1] }).toEqual({
        kind,
        hardStop: '30s',
      });
    }
  });

  /** A duration of HAProxy or nginx (`75s`, `1h`, `500ms`, bare seconds for nginx) in ms. */
  const durationMs = (value: string): number => {
    const match = /^(\d+)(ms|s|m|h)?$/.exec(value);
    if (!match) throw new Error(`not a duration: ${value}`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 's']!;
    return Number(match[1]) * unit;
  };

  it("HAProxy and nginx: no stickiness (the hubs take websockets only), idle timeouts above the hub's ping period", () => {
    const hub = loadConfig({ AGENTCOM_DEV: '1' });
    const silentFor = hub.pingIntervalMs + hub.pingTimeoutMs;
    for (const text of [render('compose'), render('loopback')]) {
      // a SERVERID cookie pinned dashboards and API clients to one replica for nothing
      expect(text).not.toMatch(/^\s*cookie\b|\bcheck cookie\b/m);
      const tunnel = /^\s*timeout tunnel (\S+)$/m.exec(text)?.[1];
      expect(durationMs(tunnel ?? '0')).toBeGreaterThan(silentFor);
    }
    const nginx = readFileSync(join(ROOT, 'docker', 'nginx.conf'), 'utf8').replace(/#.*$/gm, '');
    expect(nginx).not.toMatch(/\b(sticky|ip_hash|hash \$)/);
    for (const directive of ['proxy_read_timeout', 'proxy_send_timeout']) {
      const value = new RegExp(`${directive} (\\S+);`).exec(nginx)?.[1];
      expect(durationMs(value ?? '0')).toBeGreaterThan(silentFor);
    }
  });

  it('.dockerignore keeps host builds, node_modules and local state out of the context, and every COPY source in', () => {
    const file = join(ROOT, '.dockerignore');
    expect(existsSync(file)).toBe(true);
    const excluded = dockerIgnore(readFileSync(file, 'utf8'));
    // what a developer's checkout holds after `make build`, `make demo`, `make cluster`
    for (const path of [
      '.git/config',
      'node_modules/zod/package.json',
      'sidecar/node_modules/commander/package.json',
      'hub/dist/main.js',
      'shared/dist/index.js',
      'sidecar/dist/cli.js',
      'sidecar/build/cli.js',
      'hub/tsconfig.tsbuildinfo',
      'shared/tsconfig.tsbuildinfo',
      'agentcom-sidecar-0.1.0.tgz',
      '.agentcom/redis/appendonlydir/appendonly.aof.1.incr.aof',
      '.agentcom/demo/demo-agent-1/token',
      '.agentcom/cluster/cluster.json',
    ]) {
      expect({ path, excluded: excluded(path) }).toEqual({ path, excluded: true });
    }
    const context = contextFiles(excluded);
    expect(
      context.filter((path) =>
        /(^|\/)(node_modules|dist|\.git|\.agentcom)(\/|$)|\.tsbuildinfo$/.test(path),
      ),
    ).toEqual([]);
    // everything the Dockerfiles COPY from the context is in it
    const needed = [
      'hub/src/main.ts',
      'hub/src/redis/lua/transition.lua',
      'shared/src/index.ts',
      'sidecar/src/cli.ts',
      'sidecar/build.mjs',
      'sidecar/README.md',
    ];
    for (const name of DOCKERFILES) {
      for (const line of readDockerfile(name).split('\n')) {
        const copy = /^COPY (?!--from)(.+)$/.exec(line);
        if (!copy) continue;
        const sources = copy[1]!.trim().split(/\s+/).slice(0, -1);
        for (const source of sources) {
          const path = source.replace(/\/$/, '');
          const inContext = context.some((f) => f === path || f.startsWith(`${path}/`));
          expect({ name, source, inContext }).toEqual({ name, source, inContext: true });
        }
      }
    }
    for (const path of needed) {
      expect({ path, inContext: context.includes(path) }).toEqual({ path, inContext: true });
    }
  });

  it('images: base images pinned to a release, `# syntax` on the first line, non-root', () => {
    const pinned = /^[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?(@sha256:[0-9a-f]{64})?$/;
    const images: string[] = [];
    for (const name of DOCKERFILES) {
      const text = readDockerfile(name);
      // a parser directive after any comment is a plain comment
      expect({ name, first: text.split('\n')[0] }).toEqual({
        name,
        first: '# syntax=docker/dockerfile:1',
      });
      for (const match of text.matchAll(/^FROM (\S+)/gm)) images.push(match[1]!);
      expect({ name, user: /^USER node$/m.test(text) }).toEqual({ name, user: true });
    }
    for (const service of Object.values(readCompose().services)) {
      if (service.build === undefined) images.push(service.image as string);
    }
    expect(images.length).toBeGreaterThanOrEqual(6);
    for (const image of images) {
      expect({ image, pinned: pinned.test(image) }).toEqual({ image, pinned: true });
    }
  });

  it('hub image: dev dependencies pruned from the whole tree', () => {
    const text = readDockerfile('hub.Dockerfile');
    const prune = /^[^#\n]*npm prune [^\n]*/m.exec(text)?.[0] ?? '';
    expect(prune).toContain('--omit=dev');
    // npm 11 keeps the root's devDependencies with a workspace filter
    expect(prune).not.toMatch(/--workspace|--include-workspace-root/);
  });

  it('compose: the sidecar keeps its state dir (its outbox) in a volume the image prepared for it', () => {
    const compose = readCompose();
    const text = readDockerfile('sidecar.Dockerfile');
    const stateDir = /^ENV AGENTCOM_STATE_DIR=(\S+)$/m.exec(text)?.[1];
    expect(stateDir).toBeDefined();
    const mounts = (compose.services.sidecar!.volumes as string[] | undefined) ?? [];
    const mount = mounts.map((m) => m.split(':')).find(([, target]) => target === stateDir);
    expect(mount).toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(mount![0]);
    // a new named volume copies the image's directory: it must be node's and owner-only there
    const beforeUser = text.slice(0, text.indexOf('\nUSER node'));
    expect(beforeUser).toMatch(/chown -R node:node \/home\/node\/\.local/);
    expect(beforeUser).toMatch(/chmod 700 "\$AGENTCOM_STATE_DIR"/);
  });

  it('compose: every hub variable is one the hub reads', () => {
    const configSource = readFileSync(join(ROOT, 'hub', 'src', 'config.ts'), 'utf8');
    const { services } = readCompose();
    for (const name of ['hub1', 'hub2', 'hub3']) {
      const env = services[name]!.environment as Record<string, string>;
      expect(loadConfig({ ...env, AGENTCOM_ADMIN_KEY: 'x'.repeat(24) })).toBeDefined();
      for (const key of Object.keys(env)) {
        expect({ key, read: new RegExp(`^  ${key}: `, 'm').test(configSource) }).toEqual({
          key,
          read: true,
        });
      }
    }
  });

  it('nginx -t accepts docker/nginx.conf rendered for loopback, with websocket upgrade and long timeouts', () => {
    const conf = readFileSync(join(ROOT, 'docker', 'nginx.conf'), 'utf8');
    expect(conf).toContain('proxy_set_header Upgrade $http_upgrade');
    expect(conf).toMatch(/proxy_read_timeout 75s/);
    const rendered = conf
      .replace(/hub(\d):8080/g, '127.0.0.1:1810$1')
      .replace('listen 8080', 'listen 127.0.0.1:18091');
    const file = join(dir, 'nginx.conf');
    writeFileSync(file, rendered);
    const check = spawnSync('nginx', ['-t', '-c', file, '-p', dir, '-e', join(dir, 'error.log')], {
      encoding: 'utf8',
    });
    expect({ status: check.status, out: check.stderr }).toMatchObject({ status: 0 });
    expect(check.stderr).toContain('test is successful');
  });
});

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT } from '../helpers/processes';

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
    const compose = parse(readFileSync(join(ROOT, 'docker', 'compose.yaml'), 'utf8'), {
      merge: true,
    }) as {
      services: Record<string, Record<string, unknown>>;
    };
    const { services } = compose;
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

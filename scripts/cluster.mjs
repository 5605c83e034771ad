#!/usr/bin/env node
// `make cluster N=3` / `make cluster-down`: the compose topology without Docker, on loopback.
// Redis (AOF), N hub processes and HAProxy (config rendered from docker/haproxy.cfg.template)
// start in the background; their pids go to <dir>/pids so `down` stops exactly what `up` started.
//   node scripts/cluster.mjs up [N]   |   node scripts/cluster.mjs down   |   node scripts/cluster.mjs start-hub I
// Ports (env): CLUSTER_PORT (LB, 8090), CLUSTER_HUB_BASE (8101 → hubs 8101..), CLUSTER_REDIS_PORT
// (6381), CLUSTER_STATS_PORT (8404). CLUSTER_DIR (.agentcom/cluster). Extra hub env: CLUSTER_HUB_ENV
// as JSON.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderHaproxyConfig } from './haproxy-config.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const dir = resolve(env.CLUSTER_DIR ?? join(root, '.agentcom', 'cluster'));
const lbPort = Number(env.CLUSTER_PORT ?? 8090);
const hubBase = Number(env.CLUSTER_HUB_BASE ?? 8101);
const redisPort = Number(env.CLUSTER_REDIS_PORT ?? 6381);
const statsPort = Number(env.CLUSTER_STATS_PORT ?? 8404);
const pidsFile = join(dir, 'pids');
const stateFile = join(dir, 'cluster.json');

const log = (line) => process.stdout.write(`${line}\n`);
/** Set once `up` started a process: a failure after that leaves it running for `down` to stop. */
let started = false;
const fail = (line) => {
  const hint = started
    ? '\ncluster: what started is still running: `make cluster-down` stops it'
    : '';
  process.stderr.write(`cluster: ${line}${hint}\n`);
  process.exit(1);
};

function readPids() {
  if (!existsSync(pidsFile)) return [];
  return readFileSync(pidsFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [name, pid] = line.split(' ');
      return { name, pid: Number(pid) };
    });
}
const recordPid = (name, pid) => {
  started = true;
  writeFileSync(pidsFile, `${name} ${pid}\n`, { flag: 'a' });
};

/** What the command line of each recorded process contains. */
const commandOfName = (name) =>
  name.startsWith('hub')
    ? join(root, 'hub', 'dist', 'main.js')
    : name === 'haproxy'
      ? 'haproxy'
      : 'redis-server';

/**
 * The state and command line of process `pid` (Linux: procfs; elsewhere: ps), or undefined when
 * there is none.
 */
function processInfo(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    return { state, args };
  } catch {
    if (existsSync('/proc/self/stat')) return undefined; // procfs, and no such process
  }
  const ps = spawnSync('ps', ['-o', 'stat=', '-o', 'args=', '-p', String(pid)], {
    encoding: 'utf8',
  });
  const line = ps.status === 0 ? ps.stdout.trim() : '';
  if (!line) return undefined;
  const [state = '', ...args] = line.split(/\s+/);
  return { state, args: args.join(' ') };
}

/**
 * Whether the process recorded as `name` still runs: alive, not a zombie, and still the program
 * `up` started. A pids file outlives its processes (a reboot, a kill -9): its pids may have been
 * reused by anything since, which `down` must not signal and `up` must not take for a cluster.
 */
const alive = (name, pid) => {
  const info = processInfo(pid);
  return (
    info !== undefined && !info.state.startsWith('Z') && info.args.includes(commandOfName(name))
  );
};

async function waitFor(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`${what} not ready within ${timeoutMs} ms (logs in ${dir})`);
}
/**
 * The pid a daemon wrote to `file`, or undefined while there is none yet. Redis forks before it
 * writes its pid file (fopen, then the pid at fclose): the file can exist and still be empty.
 */
function pidInFile(file) {
  if (!existsSync(file)) return undefined;
  const pid = /^(\d+)\n/.exec(readFileSync(file, 'utf8'))?.[1];
  return pid !== undefined && Number(pid) > 0 ? Number(pid) : undefined;
}

/** Waits for a whole pid in `file` and returns it. */
async function waitForPid(what, file) {
  await waitFor(what, () => pidInFile(file) !== undefined);
  return pidInFile(file);
}

const httpStatus = (url) =>
  fetch(url).then(
    (r) => r.status,
    () => 0,
  );

function startHub(index, state) {
  const port = hubBase + index - 1;
  const out = openSync(join(dir, `hub${index}.log`), 'a');
  const child = spawn(process.execPath, [join(root, 'hub', 'dist', 'main.js')], {
    env: {
      ...env,
      REDIS_URL: state.redisUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      HUB_ID: `hub${index}`,
      AGENTCOM_ADMIN_KEY: state.adminKey,
      // agents come through HAProxy, which appends their address to X-Forwarded-For
      TRUST_PROXY: '1',
      // as compose: on SIGTERM /readyz is 503 this long before the listener closes, for HAProxy's
      // checks (inter 1s, fall 2) to take the replica out first
      SHUTDOWN_DELAY_MS: '3000',
      ...JSON.parse(env.CLUSTER_HUB_ENV ?? '{}'),
    },
    detached: true,
    stdio: ['ignore', out, out],
  });
  child.unref();
  recordPid(`hub${index}`, child.pid);
  return { port, pid: child.pid };
}

async function up(count) {
  if (readPids().some(({ name, pid }) => alive(name, pid)))
    fail(`already running (see ${pidsFile}); run \`make cluster-down\` first`);
  for (const tool of ['redis-server', 'haproxy']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      fail(
        `${tool} not found: apt-get install ${tool === 'redis-server' ? 'redis-server' : 'haproxy'}`,
      );
  }
  if (!existsSync(join(root, 'hub', 'dist', 'main.js')))
    fail('hub/dist/main.js missing: run `make build`');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'redis'), { recursive: true });
  const state = {
    adminKey: env.AGENTCOM_ADMIN_KEY ?? randomBytes(18).toString('base64url'),
    redisUrl: `redis://127.0.0.1:${redisPort}`,
    lbUrl: `http://127.0.0.1:${lbPort}`,
    statsUrl: `http://127.0.0.1:${statsPort}/stats`,
    hubs: [],
  };

  const redisPid = join(dir, 'redis.pid');
  // the hub's own command line for its Redis (built by `make cluster` before this runs)
  const { redisServerArgs } = await import('../hub/dist/embedded-redis.js');
  const redis = spawnSync(
    'redis-server',
    redisServerArgs(redisPort, join(dir, 'redis'), {
      appendonly: true,
      extra: ['--daemonize', 'yes', '--pidfile', redisPid, '--logfile', join(dir, 'redis.log')],
    }),
  );
  if (redis.status !== 0) fail(`redis-server failed: ${redis.stderr}`);
  recordPid('redis', await waitForPid('redis', redisPid));

  for (let i = 1; i <= count; i++)
    state.hubs.push({ name: `hub${i}`, url: `http://127.0.0.1:${startHub(i, state).port}` });
  await Promise.all(
    state.hubs.map((hub) =>
      waitFor(hub.name, async () => (await httpStatus(`${hub.url}/readyz`)) === 200),
    ),
  );

  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    renderHaproxyConfig({
      bind: `127.0.0.1:${lbPort}`,
      statsBind: `127.0.0.1:${statsPort}`,
      servers: state.hubs.map((hub) => ({
        name: hub.name,
        address: hub.url.replace('http://', ''),
      })),
    }),
  );
  const check = spawnSync('haproxy', ['-c', '-q', '-f', cfg], { encoding: 'utf8' });
  if (check.status !== 0) fail(`haproxy -c refused ${cfg}: ${check.stderr}`);
  const haproxyPid = join(dir, 'haproxy.pid');
  const lb = spawnSync('haproxy', ['-D', '-f', cfg, '-p', haproxyPid], { encoding: 'utf8' });
  if (lb.status !== 0) fail(`haproxy failed: ${lb.stderr}`);
  recordPid('haproxy', await waitForPid('haproxy', haproxyPid));
  await waitFor(
    'the load balancer',
    async () => (await httpStatus(`${state.lbUrl}/readyz`)) === 200,
  );

  writeFileSync(stateFile, JSON.stringify(state, null, 2));
  log(`load balancer ${state.lbUrl}   (API /v1, Bull Board /admin/queues, agents page /)`);
  for (const hub of state.hubs) log(`${hub.name.padEnd(13)} ${hub.url}`);
  log(`haproxy stats ${state.statsUrl}`);
  log(`redis         ${state.redisUrl}`);
  log(`admin key     ${state.adminKey}`);
  log(`state         ${stateFile}; stop with \`make cluster-down\``);
}

/** Sends `sig`; a process that ended meanwhile is fine. */
const signal = (pid, sig) => {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
};

async function down() {
  const pids = readPids();
  if (pids.length === 0) {
    log('cluster: nothing to stop');
    return;
  }
  // hubs first (graceful), then the balancer, then Redis
  const order = (name) => (name.startsWith('hub') ? 0 : name === 'haproxy' ? 1 : 2);
  for (const group of [0, 1, 2]) {
    const members = pids.filter((p) => order(p.name) === group && alive(p.name, p.pid));
    for (const { pid } of members) signal(pid, 'SIGTERM');
    const deadline = Date.now() + 20_000;
    while (members.some(({ name, pid }) => alive(name, pid)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    for (const { name, pid } of members) {
      if (alive(name, pid)) {
        log(`cluster: ${name} (${pid}) ignored SIGTERM: SIGKILL`);
        signal(pid, 'SIGKILL');
      }
    }
  }
  rmSync(pidsFile, { force: true });
  log(`cluster: stopped ${pids.map((p) => p.name).join(', ')}`);
}

const [command, arg] = process.argv.slice(2);
if (command === 'up') await up(Number(arg ?? 3));
else if (command === 'down') await down();
else if (command === 'start-hub') {
  const state = JSON.parse(readFileSync(stateFile, 'utf8'));
  const { port } = startHub(Number(arg), state);
  await waitFor(
    `hub${arg}`,
    async () => (await httpStatus(`http://127.0.0.1:${port}/readyz`)) === 200,
  );
  log(`hub${arg} started again on http://127.0.0.1:${port}`);
} else fail('usage: cluster.mjs up [N] | down | start-hub I');

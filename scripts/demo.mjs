#!/usr/bin/env node
// `make demo`: the whole system on this machine. Embedded Redis (AOF on), 3 hub replicas on
// ports 8081-8083, 4 sidecars spread over them, tasks submitted to every replica and their
// results printed. Ctrl-C stops everything. With DEMO_TASKS=N it runs N tasks and exits 0 once
// all completed (1 if any failed or a 120 s deadline passed).
// Every run uses the key prefix `demo` and clears it first, so the Redis, whose data outlives the
// run, holds one run's keys at most. One demo per Redis at a time: a second run would clear the
// first's keys, so it stops first if a hub port is taken.
// Env: DEMO_HUB_BASE (8081 → hubs 8081..8083), AGENTCOM_REDIS_PORT (6380), AGENTCOM_DATA_DIR
// (.agentcom: the Redis AOF in redis/, the sidecars' state in demo/).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const { startEmbeddedRedis } = require(join(root, 'hub/dist/embedded-redis.js'));
const { RedisKeys } = require(join(root, 'hub/dist/redis/keys.js'));
const { Redis } = require('ioredis');

const fixedCount = process.env.DEMO_TASKS ? Number(process.env.DEMO_TASKS) : undefined;
const hubBase = Number(process.env.DEMO_HUB_BASE ?? 8081);
const hubPorts = [hubBase, hubBase + 1, hubBase + 2];
const agentCount = 4;
const dataDir = resolve(process.env.AGENTCOM_DATA_DIR ?? join(root, '.agentcom'));
const demoDir = join(dataDir, 'demo');
const adminKey = process.env.AGENTCOM_ADMIN_KEY ?? randomBytes(18).toString('base64url');
const prefix = 'demo';
/**
 * What a run clears before its hubs start: its prefix's keys (BullMQ's too), and those of the
 * random prefixes earlier versions of the demo used per run (`demo` and 6 hex digits).
 */
const clearedPatterns = [prefix, `demo${'[0-9a-f]'.repeat(6)}`].map(
  (name) => `${new RedisKeys(name).root}:*`,
);
const children = [];
let stopping = false;

const log = (line) => process.stdout.write(`${line}\n`);

function start(name, args, env) {
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr.setEncoding('utf8');
  let tail = '';
  child.stderr.on('data', (chunk) => {
    tail = (tail + chunk).slice(-4000);
  });
  child.on('exit', (code, signal) => {
    if (!stopping) {
      log(`! ${name} exited (${signal ?? code}); last output:\n${tail}`);
      void stop(1);
    }
  });
  children.push({ name, child });
  return child;
}

async function api(port, method, path, body) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${adminKey}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  if (response.status >= 400) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function waitReady(port) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`hub on port ${port} not ready within 20 s`);
}

/** Refuses to go on when a hub port is taken (another demo, most likely), before any clearing. */
async function ensurePortFree(port) {
  await new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', (err) =>
      reject(new Error(`port ${port} is taken (${err.code}): is another demo running?`)),
    );
    server.listen(port, '127.0.0.1', () => server.close(() => resolvePort()));
  });
}

/** Deletes the keys of earlier runs (see {@link clearedPatterns}); answers how many. */
async function clearEarlierRuns(url) {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  let count = 0;
  try {
    for (const match of clearedPatterns) {
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000);
        if (keys.length > 0) count += await client.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
    }
  } finally {
    client.disconnect();
  }
  return count;
}

let redis;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  log('stopping sidecars, hubs and Redis...');
  const exit = ({ child }) =>
    new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once('exit', done);
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
    });
  // the sidecars first: a stopping sidecar hands its last report to a hub (it waits for one)
  const isHub = ({ name }) => name.startsWith('hub-');
  await Promise.all(children.filter((entry) => !isHub(entry)).map(exit));
  await Promise.all(children.filter(isHub).map(exit));
  if (redis?.owned) await redis.stop();
  log('stopped.');
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

async function main() {
  await Promise.all(hubPorts.map(ensurePortFree));
  redis = await startEmbeddedRedis(dataDir, Number(process.env.AGENTCOM_REDIS_PORT ?? 6380));
  log(`redis     ${redis.url} (AOF in ${redis.dir}${redis.owned ? '' : ', already running'})`);
  log(`cleared   ${await clearEarlierRuns(redis.url)} keys of earlier runs (prefix ${prefix})`);
  for (const [i, port] of hubPorts.entries()) {
    start(`hub-${i + 1}`, [join(root, 'hub/dist/main.js')], {
      REDIS_URL: redis.url,
      PORT: String(port),
      HOST: '127.0.0.1',
      HUB_ID: `hub-${i + 1}`,
      AGENTCOM_ADMIN_KEY: adminKey,
      AGENTCOM_PREFIX: prefix,
      LOG_LEVEL: 'warn',
    });
  }
  await Promise.all(hubPorts.map(waitReady));
  rmSync(demoDir, { recursive: true, force: true });
  for (let i = 1; i <= agentCount; i++) {
    const agentId = `demo-agent-${i}`;
    const port = hubPorts[(i - 1) % hubPorts.length];
    const { token } = await api(port, 'POST', '/v1/agents', { agentId, queues: ['default'] });
    const dir = join(demoDir, agentId);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, token, { mode: 0o600 });
    start(agentId, [join(root, 'sidecar/dist/cli.js'), 'run'], {
      AGENTCOM_HUB: `http://127.0.0.1:${port}`,
      AGENTCOM_AGENT: agentId,
      AGENTCOM_TOKEN_FILE: tokenFile,
      AGENTCOM_QUEUES: 'default',
      AGENTCOM_EXEC: `${process.execPath} ${join(root, 'scripts/demo-handler.mjs')}`,
      AGENTCOM_STATE_DIR: dir,
      LOG_LEVEL: 'warn',
    });
  }
  for (const port of hubPorts)
    log(`hub       http://127.0.0.1:${port}  (GET /v1/agents, /v1/tasks/:id; /healthz, /readyz)`);
  log(`admin key ${adminKey}`);
  log(
    `try:      curl -s -H 'authorization: Bearer ${adminKey}' http://127.0.0.1:${hubPorts[0]}/v1/agents`,
  );

  const pending = new Map();
  let submitted = 0;
  let completed = 0;
  let failed = 0;
  const submit = async () => {
    const port = hubPorts[submitted % hubPorts.length];
    submitted++;
    const text = `task number ${submitted} says hello to the agents`;
    const { id } = await api(port, 'POST', '/v1/tasks', { payload: { text }, attempts: 3 });
    pending.set(id, { port, submittedAt: Date.now(), n: submitted });
  };
  const poll = async () => {
    for (const [id, info] of pending) {
      const task = await api(hubPorts[(info.n + 1) % hubPorts.length], 'GET', `/v1/tasks/${id}`);
      if (task.state === 'completed' || task.state === 'failed' || task.state === 'cancelled') {
        pending.delete(id);
        if (task.state === 'completed') completed++;
        else failed++;
        const took = Date.now() - info.submittedAt;
        log(
          `task ${String(info.n).padStart(3)} ${task.state.padEnd(9)} by ${task.agentId ?? '?'} via hub ${info.port} in ${took} ms: ${JSON.stringify(task.result ?? task.error)}`,
        );
      }
    }
  };

  if (fixedCount !== undefined) {
    for (let i = 0; i < fixedCount; i++) await submit();
    const deadline = Date.now() + 120_000;
    while (pending.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      await poll();
    }
    log(`${completed} completed, ${failed} failed, ${pending.size} unfinished of ${fixedCount}`);
    await stop(completed === fixedCount ? 0 : 1);
    return;
  }
  log('submitting a task every second; Ctrl-C stops everything');
  for (;;) {
    await submit();
    await new Promise((r) => setTimeout(r, 1000));
    await poll();
  }
}

main().catch((err) => {
  log(`demo failed: ${err.message}`);
  void stop(1);
});

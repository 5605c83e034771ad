#!/usr/bin/env node
// `make pack-test`, last step: the sidecar as `npm install -g` installed it, against a real hub.
// The Makefile packs the sidecar and installs the tarball offline into a temp prefix; this script
// checks the tarball's contents, then starts a private redis-server and one hub (both on
// 127.0.0.1, free ports), mints an agent token, runs the INSTALLED `agentcom-sidecar run` with an
// exec handler, submits a task and waits (30 s at most) for it to complete with the handler's
// result. SIGTERM must stop the sidecar with exit 0. Exit 0 when all of that held; otherwise it
// prints what failed, with the last output of each process, and exits 1.
//
// Usage: node sidecar/scripts/pack-test.mjs --prefix DIR [--tarball FILE]
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values } = parseArgs({
  options: { prefix: { type: 'string' }, tarball: { type: 'string' } },
});
const LOOPBACK = '127.0.0.1';
const ADMIN_KEY = randomBytes(18).toString('base64url'); // 24 characters
const AGENT = 'pack-agent';
const processes = [];
const work = mkdtempSync(join(tmpdir(), 'agentcom-pack-test-'));

class Failure extends Error {}

const say = (line) => process.stdout.write(`pack-test: ${line}\n`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Retries `check` every `everyMs` until it returns something other than undefined, for at most `timeoutMs`. */
async function eventually(what, check, timeoutMs, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Failure(`${what}: not within ${timeoutMs} ms${last ? ` (${last.message})` : ''}`);
    }
    await sleep(everyMs);
  }
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Starts a process, keeping the tail of its output for the failure report. */
function start(name, command, args, env) {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { name, child, output: '', exit: undefined };
  const keep = (chunk) => {
    proc.output = (proc.output + chunk.toString('utf8')).slice(-6000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  proc.exited = new Promise((resolveExit) => {
    child.once('exit', (code, signal) => {
      proc.exit = { code, signal };
      resolveExit(proc.exit);
    });
    child.once('error', (err) => {
      proc.output += `\n${err.message}`;
      proc.exit = { code: null, signal: null, error: err.message };
      resolveExit(proc.exit);
    });
  });
  processes.push(proc);
  return proc;
}

/** Sends `signal` and waits for the exit, up to `timeoutMs` (then SIGKILL). */
async function stop(proc, signal, timeoutMs) {
  if (proc.exit !== undefined) return proc.exit;
  proc.child.kill(signal);
  let timer;
  const late = new Promise((resolveLate) => {
    timer = setTimeout(() => resolveLate(undefined), timeoutMs);
  });
  const exit = await Promise.race([proc.exited, late]);
  clearTimeout(timer);
  if (exit !== undefined) return exit;
  proc.child.kill('SIGKILL');
  await proc.exited;
  return undefined;
}

function redisPing(port) {
  return new Promise((resolvePing) => {
    const socket = createConnection({ host: LOOPBACK, port });
    let answer = '';
    const done = (value) => {
      socket.destroy();
      resolvePing(value);
    };
    socket.setTimeout(1000, () => done(undefined));
    socket.on('error', () => done(undefined));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG') ? true : undefined);
    });
  });
}

async function api(base, method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_KEY}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  return { status: response.status, body: text === '' ? undefined : JSON.parse(text) };
}

/** The tarball holds package.json, README.md and the bundles `files` names, nothing else; no dependencies. */
function checkTarball(tarball) {
  const listed = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line !== '')
    .sort();
  const manifest = JSON.parse(
    execFileSync('tar', ['-xzOf', tarball, 'package/package.json'], { encoding: 'utf8' }),
  );
  const expected = ['README.md', 'package.json', ...manifest.files]
    .map((file) => `package/${file}`)
    .sort();
  if (!isDeepStrictEqual(listed, expected)) {
    throw new Failure(`the tarball holds ${listed.join(', ')}; expected ${expected.join(', ')}`);
  }
  if (!manifest.files.every((file) => /^dist\/[\w.-]+\.js$/.test(file))) {
    throw new Failure(`package.json "files" names more than bundles: ${manifest.files.join(', ')}`);
  }
  if (manifest.dependencies && Object.keys(manifest.dependencies).length > 0) {
    throw new Failure(
      `the package has runtime dependencies (${Object.keys(manifest.dependencies).join(', ')}): everything must be bundled`,
    );
  }
  say(`tarball holds ${listed.join(', ')}`);
  return manifest;
}

async function main() {
  if (values.prefix === undefined)
    throw new Failure('usage: pack-test.mjs --prefix DIR [--tarball FILE]');
  const manifest = values.tarball === undefined ? undefined : checkTarball(values.tarball);
  for (const name of Object.keys(manifest?.bin ?? { 'agentcom-sidecar': '' })) {
    const installed = join(resolve(values.prefix), 'bin', name);
    if (!existsSync(installed)) throw new Failure(`${installed} is not installed`);
  }
  const bin = join(resolve(values.prefix), 'bin', 'agentcom-sidecar');
  const hubMain = join(root, 'hub', 'dist', 'main.js');
  if (!existsSync(hubMain)) throw new Failure(`${hubMain} is missing: run make build`);

  const expectedVersion = JSON.parse(
    readFileSync(join(root, 'sidecar', 'package.json'), 'utf8'),
  ).version;
  const version = execFileSync(bin, ['version'], { encoding: 'utf8' }).trim();
  if (version !== expectedVersion) {
    throw new Failure(`the installed sidecar says version ${version}, expected ${expectedVersion}`);
  }
  say(`installed ${bin} (version ${version})`);

  const redisPort = await freePort();
  const redis = start(
    'redis-server',
    'redis-server',
    [
      '--port',
      String(redisPort),
      '--bind',
      LOOPBACK,
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      work,
    ],
    process.env,
  );
  await eventually(
    'redis-server answers PING',
    async () => {
      if (redis.exit !== undefined) throw new Failure(`redis-server exited: ${redis.output}`);
      return redisPing(redisPort);
    },
    10_000,
  );

  const hubPort = await freePort();
  const hubUrl = `http://${LOOPBACK}:${hubPort}`;
  const hub = start('hub', process.execPath, [hubMain], {
    ...process.env,
    REDIS_URL: `redis://${LOOPBACK}:${redisPort}`,
    PORT: String(hubPort),
    HOST: LOOPBACK,
    AGENTCOM_ADMIN_KEY: ADMIN_KEY,
    AGENTCOM_PREFIX: 'packtest',
    LOG_LEVEL: 'warn',
  });
  await eventually(
    'the hub is ready (/readyz 200)',
    async () => {
      if (hub.exit !== undefined) throw new Failure(`the hub exited (${JSON.stringify(hub.exit)})`);
      const response = await fetch(`${hubUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
      return response.status === 200 ? true : undefined;
    },
    20_000,
  );
  say(`hub ready on ${hubUrl}`);

  const minted = await api(hubUrl, 'POST', '/v1/agents', { agentId: AGENT });
  if (minted.status !== 201 && minted.status !== 200) {
    throw new Failure(`POST /v1/agents answered ${minted.status}: ${JSON.stringify(minted.body)}`);
  }
  const tokenFile = join(work, 'token');
  writeFileSync(tokenFile, `${minted.body.token}\n`, { mode: 0o600 });

  // The handler echoes the task's payload; the sidecar splits this line without a shell.
  const handler =
    'let s="";process.stdin.on("data",(c)=>{s+=c}).on("end",()=>{' +
    'const t=JSON.parse(s);console.log(JSON.stringify({echo:t.payload,queue:t.queue}))})';
  const sidecar = start(
    'sidecar',
    bin,
    [
      'run',
      '--hub',
      hubUrl,
      '--agent',
      AGENT,
      '--token-file',
      tokenFile,
      '--queue',
      'default',
      '--exec',
      `'${process.execPath}' -e '${handler}'`,
      '--state-dir',
      join(work, 'state'),
      '--heartbeat-ms',
      '1000',
    ],
    { PATH: process.env.PATH ?? '', HOME: work },
  );

  await eventually(
    'the agent is idle in the hub',
    async () => {
      if (sidecar.exit !== undefined)
        throw new Failure(`the sidecar exited (${JSON.stringify(sidecar.exit)})`);
      const agent = await api(hubUrl, 'GET', `/v1/agents/${AGENT}`);
      return agent.status === 200 && agent.body.state === 'idle' ? true : undefined;
    },
    20_000,
  );
  say('the installed sidecar connected');

  const created = await api(hubUrl, 'POST', '/v1/tasks', { payload: { n: 42, from: 'pack-test' } });
  if (created.status !== 201) {
    throw new Failure(`POST /v1/tasks answered ${created.status}: ${JSON.stringify(created.body)}`);
  }
  const taskId = created.body.id;
  const expected = { echo: { n: 42, from: 'pack-test' }, queue: 'default' };
  const task = await eventually(
    `task ${taskId} completes`,
    async () => {
      if (sidecar.exit !== undefined)
        throw new Failure(`the sidecar exited (${JSON.stringify(sidecar.exit)})`);
      const view = await api(hubUrl, 'GET', `/v1/tasks/${taskId}`);
      if (view.body?.state === 'failed' || view.body?.state === 'cancelled') {
        throw new Failure(`task ${taskId} ended ${view.body.state}: ${view.body.error ?? ''}`);
      }
      return view.body?.state === 'completed' ? view.body : undefined;
    },
    30_000,
  );
  if (!isDeepStrictEqual(task.result, expected)) {
    throw new Failure(
      `task ${taskId} completed with ${JSON.stringify(task.result)}, expected ${JSON.stringify(expected)}`,
    );
  }
  say(`task ${taskId} completed with ${JSON.stringify(task.result)}`);

  const exit = await stop(sidecar, 'SIGTERM', 40_000);
  if (exit === undefined || exit.code !== 0) {
    throw new Failure(
      `SIGTERM: the sidecar exited with ${JSON.stringify(exit ?? 'nothing: killed after 40 s')}, expected code 0`,
    );
  }
  say('SIGTERM: the sidecar drained and exited 0');
}

async function cleanup() {
  for (const proc of [...processes].reverse()) await stop(proc, 'SIGTERM', 15_000);
  rmSync(work, { recursive: true, force: true });
}

let code = 0;
try {
  await main();
  say('ok');
} catch (err) {
  code = 1;
  process.stderr.write(`pack-test: FAILED: ${err instanceof Failure ? err.message : err.stack}\n`);
  for (const proc of processes) {
    process.stderr.write(
      `--- last output of ${proc.name} (${JSON.stringify(proc.exit ?? 'running')}):\n${proc.output.trim()}\n`,
    );
  }
} finally {
  await cleanup();
}
process.exit(code);

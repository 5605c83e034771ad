import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { buildBundle } from '../test-support/cli-process';
import { FakeHub } from '../test-support/fake-hub';
import { makeTempDir } from '../test-support/temp-dir';

/**
 * The sidecar under a real pm2 (7.0.4, installed as a tool by `make tools/pm2`, never a
 * dependency), with the options of deploy/ecosystem.config.cjs and short timings: it starts,
 * connects, is killed with SIGKILL, and pm2 starts it again, which connects again. pm2 runs
 * with its own PM2_HOME in a temp dir, and is always killed afterwards.
 */

const ROOT = resolve(__dirname, '..', '..', '..');
const PM2 = join(ROOT, '.tools', 'pm2', 'node_modules', '.bin', 'pm2');
const DEPLOY_ECOSYSTEM = join(ROOT, 'sidecar', 'deploy', 'ecosystem.config.cjs');
const APP = 'agentcom-sidecar-test';

let dir: string;
let cleanup: () => Promise<void>;
let hub: FakeHub;
let pm2Home: string;

beforeAll(async () => {
  if (!existsSync(PM2)) {
    throw new Error(`pm2 is not installed at ${PM2}: run \`make tools/pm2\``);
  }
  ({ dir, cleanup } = await makeTempDir());
  pm2Home = join(dir, 'pm2');
  hub = new FakeHub();
  await hub.start();
});

afterAll(async () => {
  // Always: the pm2 daemon and its app outlive this process otherwise.
  if (pm2Home !== undefined) await pm2(['kill'], 30_000).catch(() => undefined);
  await hub?.stop();
  await cleanup?.();
});

/** Runs the pm2 CLI against the test's PM2_HOME; rejects on a non-zero exit or after `timeoutMs`. */
function pm2(args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolvePm2, reject) => {
    const child = spawn(process.execPath, [PM2, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: dir, PM2_HOME: pm2Home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pm2 ${args.join(' ')}: no exit within ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolvePm2(output);
      else reject(new Error(`pm2 ${args.join(' ')} exited ${String(code)}:\n${output}`));
    });
  });
}

interface Pm2App {
  name: string;
  pid: number;
  pm2_env: { status: string; restart_time: number };
}

/** The app as `pm2 jlist` shows it. */
async function app(): Promise<Pm2App> {
  const output = await pm2(['jlist']);
  const json = output.split('\n').find((line) => line.trimStart().startsWith('['));
  if (json === undefined) throw new Error(`pm2 jlist printed no JSON:\n${output}`);
  const found = (JSON.parse(json) as Pm2App[]).find((entry) => entry.name === APP);
  if (found === undefined) throw new Error(`pm2 jlist does not list ${APP}:\n${output}`);
  return found;
}

/** Rejects if `promise` takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('the sidecar under pm2 (deploy/ecosystem.config.cjs)', () => {
  it('is restarted by pm2 after a kill -9 and reconnects', async () => {
    const bundle = await buildBundle(dir);
    const stateDir = join(dir, 'state');
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, 'pm2-agent-token\n', { mode: 0o600 });
    // The deploy file's options, pointed at the fresh bundle, with short timings.
    const ecosystem = join(dir, 'ecosystem.config.cjs');
    await writeFile(
      ecosystem,
      `const deployed = require(${JSON.stringify(DEPLOY_ECOSYSTEM)}).apps[0];
module.exports = {
  apps: [{
    ...deployed,
    name: ${JSON.stringify(APP)},
    script: ${JSON.stringify(bundle)},
    interpreter: ${JSON.stringify(process.execPath)},
    cwd: ${JSON.stringify(dir)},
    listen_timeout: 10000,
    kill_timeout: 3000,
    exp_backoff_restart_delay: 100,
    min_uptime: 500,
    max_restarts: 5,
    env: {
      ...deployed.env,
      HOME: ${JSON.stringify(dir)},
      AGENTCOM_HUB: ${JSON.stringify(hub.url)},
      AGENTCOM_AGENT: 'pm2-agent',
      AGENTCOM_TOKEN_FILE: ${JSON.stringify(tokenFile)},
      AGENTCOM_QUEUES: 'default',
      AGENTCOM_EXEC: ${JSON.stringify(`'${process.execPath}' -v`)},
      AGENTCOM_STATE_DIR: ${JSON.stringify(stateDir)},
      AGENTCOM_DRAIN_GRACE_MS: '1000',
    },
  }],
};
`,
    );

    const first = hub.connection({ fresh: true });
    // wait_ready: `pm2 start` returns once the sidecar sent 'ready' (after its first handshake).
    await pm2(['start', ecosystem]);
    const { auth } = await within(first, 20_000, 'the first connection');
    expect(auth.agentId).toBe('pm2-agent');
    const before = await app();
    expect(before.pm2_env.status).toBe('online');
    expect(before.pid).toBeGreaterThan(0);

    const again = hub.connection({ fresh: true });
    process.kill(before.pid, 'SIGKILL');
    const reconnected = await within(
      again,
      20_000,
      'pm2 to restart the sidecar and it to reconnect',
    );
    expect(reconnected.auth.agentId).toBe('pm2-agent');

    const after = await app();
    expect(after.pid).not.toBe(before.pid);
    expect(after.pm2_env.restart_time).toBeGreaterThanOrEqual(1);
    expect(after.pm2_env.status).toBe('online');
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { answersPing } from '../../hub/src/embedded-redis';
import { eventually } from '../helpers/hub';
import { HUB_MAIN, ROOT, TestProcess } from '../helpers/processes';
import { freePort } from '../helpers/redis-server';

/** `detached`: the hub leads a process group of its own, as a command started in a terminal. */
function startHub(
  env: Record<string, string>,
  path = process.env.PATH ?? '',
  detached = false,
): TestProcess {
  const child = spawn(process.execPath, [HUB_MAIN], {
    env: { PATH: path, HOME: process.env.HOME ?? '/tmp', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  return new TestProcess('hub', child);
}

/** Resolves once the hub on `port` is ready; fails with its output if it exits first. */
async function ready(hub: TestProcess, port: number): Promise<void> {
  await eventually(
    async () => {
      if (!hub.running) throw new Error(hub.output);
      const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      return response?.status === 200 ? true : undefined;
    },
    { what: 'embedded hub ready' },
  );
}

jest.setTimeout(240_000);

describe('agentcom-hub as a process', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'agentcom-hubproc-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps running through an unhandled promise rejection and logs it with its stack', async () => {
    // the guard main.ts installs, in a process of its own (Node would exit 1 without it)
    const guards = join(ROOT, 'hub', 'dist', 'process-guards.js');
    const script = `
      const { logUnhandledRejections } = require(${JSON.stringify(guards)});
      logUnhandledRejections({ error: (fields, msg) => console.log(JSON.stringify({ ...fields, msg })) });
      Promise.reject(new Error('publish on a closed connection'));
      setTimeout(() => console.log('still running'), 100);
    `;
    const proc = new TestProcess(
      'guarded',
      spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    const [logged, alive] = proc.output.trim().split('\n');
    expect(JSON.parse(logged ?? '{}')).toEqual({
      err: expect.stringMatching(/^Error: publish on a closed connection\n\s+at /),
      msg: 'unhandled promise rejection (the replica keeps running)',
    });
    expect(alive).toBe('still running');
  });

  it('exits 2 naming the variable on bad configuration', async () => {
    const hub = startHub({ AGENTCOM_ADMIN_KEY: 'a-long-enough-admin-key', PORT: 'abc' });
    expect(await hub.exited).toEqual({ code: 2, signal: null });
    expect(hub.output.trim().split('\n')).toEqual([
      expect.stringMatching(/^agentcom-hub: PORT: must be a whole number/),
    ]);
  });

  it('without REDIS_URL starts a private redis-server with AOF, prints the dev admin key, and stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const redisPort = await freePort();
    const hub = startHub({
      AGENTCOM_DEV: '1',
      PORT: String(port),
      HOST: '127.0.0.1',
      AGENTCOM_DATA_DIR: dir,
      AGENTCOM_REDIS_PORT: String(redisPort),
    });
    try {
      await ready(hub, port);
      const key = /generated admin key: (\S+)/.exec(hub.output)?.[1];
      expect(key).toBeDefined();
      const agents = await fetch(`http://127.0.0.1:${port}/v1/agents`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(agents.status).toBe(200);
      expect(hub.output).toContain('REDIS_URL not set: using the embedded redis-server');
      expect(statSync(join(dir, 'redis', 'appendonlydir')).isDirectory()).toBe(true);
      hub.child.kill('SIGTERM');
      expect(await hub.exited).toEqual({ code: 0, signal: null });
      const redisGone = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => 'refused');
      expect(redisGone).toBe('refused');
    } finally {
      await hub.kill('SIGKILL');
    }
  });

  it('with the embedded redis-server, stops cleanly on Ctrl-C (SIGINT to its whole process group)', async () => {
    const port = await freePort();
    const redisPort = await freePort();
    const hub = startHub(
      {
        AGENTCOM_DEV: '1',
        PORT: String(port),
        HOST: '127.0.0.1',
        AGENTCOM_DATA_DIR: dir,
        AGENTCOM_REDIS_PORT: String(redisPort),
        // the stop waits a while before it closes anything
        SHUTDOWN_DELAY_MS: '2000',
      },
      undefined,
      true,
    );
    try {
      await ready(hub, port);
      process.kill(-hub.child.pid!, 'SIGINT');
      await eventually(() => (hub.output.includes('"shutting down"') ? true : undefined), {
        what: 'the graceful stop to begin',
      });
      // Redis still serves the stopping hub (its disconnects, its last sweeps)
      expect(await answersPing(redisPort)).toBe(true);
      expect(await hub.exited).toEqual({ code: 0, signal: null });
      expect(hub.output).not.toContain('graceful shutdown timed out');
      expect(await answersPing(redisPort)).toBe(false); // the hub stopped it
    } finally {
      await hub.kill('SIGKILL');
    }
  });

  it('says in one line how to get Redis when no redis-server is installed', async () => {
    const hub = startHub(
      { AGENTCOM_DEV: '1', AGENTCOM_DATA_DIR: dir, AGENTCOM_REDIS_PORT: String(await freePort()) },
      '/nonexistent',
    );
    expect((await hub.exited).code).toBe(1);
    const lines = hub.output
      .trim()
      .split('\n')
      .filter((l) => !l.includes('generated admin key'));
    expect(lines).toEqual([
      expect.stringMatching(/redis-server not found on PATH: install it .* or set REDIS_URL/),
    ]);
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startEmbeddedRedis } from '../../hub/src/embedded-redis';
import { RedisKeys } from '../../hub/src/redis/keys';
import { ROOT } from '../helpers/processes';
import { freePort, freePortRange } from '../helpers/redis-server';

/**
 * `make demo` (scripts/demo.mjs) keeps its Redis data between runs (AOF under
 * `$AGENTCOM_DATA_DIR/redis`): runs, however they end, must not pile their keys up there.
 */
jest.setTimeout(120_000);

const TASK_ID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

describe('scripts/demo.mjs', () => {
  let dataDir: string;
  let env: NodeJS.ProcessEnv;
  let redisPort: number;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'agentcom-demo-'));
    redisPort = await freePort();
    env = {
      ...process.env,
      AGENTCOM_DATA_DIR: dataDir,
      AGENTCOM_REDIS_PORT: String(redisPort),
      DEMO_HUB_BASE: String(await freePortRange(3)), // hubs on base, base+1, base+2
    };
    delete env.DEMO_TASKS;
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  /**
   * Runs the demo (which starts its Redis and stops it at the end) until it exits, or until its
   * output matches `interruptOn`, when it gets SIGTERM (Ctrl-C's path).
   */
  const runDemo = (extra: NodeJS.ProcessEnv, interruptOn?: RegExp) =>
    new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'scripts', 'demo.mjs')], {
        cwd: ROOT,
        env: { ...env, ...extra },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      let interrupted = false;
      const keep = (chunk: Buffer): void => {
        output += chunk.toString('utf8');
        if (!interrupted && interruptOn?.test(output)) {
          interrupted = true;
          child.kill('SIGTERM');
        }
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      child.once('error', reject);
      child.once('exit', (code) => resolve({ code, output }));
    });

  /** Opens the demo's Redis between two runs (from its AOF: the demo stopped its own). */
  const withDemoRedis = async <T>(use: (client: Redis) => Promise<T>): Promise<T> => {
    const redis = await startEmbeddedRedis(dataDir, redisPort);
    expect(redis.owned).toBe(true);
    const client = new Redis(redis.url);
    try {
      return await use(client);
    } finally {
      client.disconnect();
      await redis.stop();
    }
  };

  /**
   * The keys the demo's Redis keeps after a run, those that do not expire within a minute: with
   * task ids replaced by `<task>`, and the ids found.
   */
  const keptKeys = () =>
    withDemoRedis(async (client) => {
      const keys = await client.keys('*');
      const pipeline = client.pipeline();
      for (const key of keys) pipeline.pttl(key);
      const ttls = ((await pipeline.exec()) ?? []).map(([, ttl]) => Number(ttl));
      const kept = keys.filter((_, i) => ttls[i] === -1 || ttls[i]! > 60_000);
      return {
        names: kept.map((key) => key.replace(TASK_ID, '<task>')).sort(),
        taskIds: new Set(kept.flatMap((key) => key.match(TASK_ID) ?? [])),
      };
    });

  it('leaves one run worth of keys in its Redis, whether a run ends by itself or by Ctrl-C', async () => {
    // what earlier versions of the demo left (a random prefix per run), and a hub's own keys
    // (`node hub/dist/main.js` without REDIS_URL shares this Redis)
    const leftover = new RedisKeys('demo0a1b2c').agents;
    const hubs = new RedisKeys('agentcom').agents;
    await withDemoRedis(async (client) => {
      await client.sadd(leftover, 'demo-agent-1');
      await client.sadd(hubs, 'agent-1');
    });

    const first = await runDemo({ DEMO_TASKS: '2' });
    expect(first).toMatchObject({ code: 0 });
    expect(first.output).toContain('2 completed, 0 failed');
    const afterFirst = await keptKeys();
    expect(afterFirst.taskIds.size).toBe(2);
    expect(afterFirst.names).not.toContain(leftover);
    expect(afterFirst.names).toContain(hubs);

    // the default mode, a task a second, stopped once one completed
    const interrupted = await runDemo({}, /task +1 completed/);
    expect(interrupted).toMatchObject({ code: 0 });
    expect(interrupted.output).toContain('stopped.');
    const afterInterrupted = await keptKeys();

    const last = await runDemo({ DEMO_TASKS: '2' });
    expect(last).toMatchObject({ code: 0 });
    const afterLast = await keptKeys();
    // what the first run left, with other tasks: nothing of the earlier runs
    expect(afterLast.names).toEqual(afterFirst.names);
    const earlier = [...afterFirst.taskIds, ...afterInterrupted.taskIds];
    expect(earlier.filter((id) => afterLast.taskIds.has(id))).toEqual([]);
  });

  it('leaves the keys alone and exits 1 when a hub port is taken (another demo, most likely)', async () => {
    const running = new RedisKeys('demo').agents;
    await withDemoRedis((client) => client.sadd(running, 'demo-agent-1'));
    const taken = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) =>
      taken.listen(Number(env.DEMO_HUB_BASE) + 1, '127.0.0.1', resolve),
    );
    try {
      const refused = await runDemo({ DEMO_TASKS: '1' });
      expect(refused.code).toBe(1);
      expect(refused.output).toMatch(/port \d+ is taken/);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
    expect((await keptKeys()).names).toContain(running);
  });
});

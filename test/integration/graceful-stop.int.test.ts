import { performance } from 'node:perf_hooks';
import type { Hub } from '../../hub/src/hub';
import { exitDeadlineMs } from '../../hub/src/stop-bounds';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';

type TestHub = Hub & { url: string };

/** Mints a token for `agentId` through `hub`'s API. */
async function mint(hub: TestHub, agentId: string): Promise<string> {
  const minted = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', { agentId });
  expect(minted.status).toBe(201);
  return minted.body.token;
}

/** How a fresh handshake of `agent` ends: `connected`, or the refusal's `data`. */
function handshake(agent: TestAgent): Promise<'connected' | { code?: string; message?: string }> {
  return withTimeout(
    new Promise((resolve) => {
      agent.socket.once('connect', () => resolve('connected'));
      agent.socket.once('connect_error', (err) =>
        resolve((err as { data?: { code?: string; message?: string } }).data ?? {}),
      );
      agent.socket.connect();
    }),
    5000,
    'the handshake to end',
  );
}

describe('a stopping replica and new agent connections', () => {
  let redis: RedisProcess;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.dispose();
  });

  it('refuses a handshake during SHUTDOWN_DELAY_MS at once with E_UNAVAILABLE; a replica not stopping takes it', async () => {
    const delayMs = 3000;
    const stopping = await startTestHub(redis.url, { SHUTDOWN_DELAY_MS: String(delayMs) });
    const other = await startTestHub(redis.url, { AGENTCOM_PREFIX: stopping.config.prefix });
    const agents: TestAgent[] = [];
    const agent = (url: string, token: string): TestAgent => {
      const made = new TestAgent(url, 'moving-agent', token);
      agents.push(made);
      return made;
    };
    let closed: Promise<void> | undefined;
    try {
      const token = await mint(stopping, 'moving-agent');
      // before the stop the replica takes the agent
      const before = agent(stopping.url, token);
      expect(await handshake(before)).toBe('connected');
      const told = new Promise((resolve) => before.socket.once('hub:draining', resolve));
      const stopStarted = performance.now();
      closed = stopping.close();
      await withTimeout(told, 1000, 'hub:draining');
      before.close(); // the sidecar moves: its next handshake reaches the replica again (leastconn)

      const refused = await handshake(agent(stopping.url, token));
      const refusedAfterMs = performance.now() - stopStarted;
      expect(refused).toEqual({
        code: 'E_UNAVAILABLE',
        message: expect.stringMatching(/stopping/),
      });
      // within the delay, while the replica still listens: refused at once, not cut later
      expect(refusedAfterMs).toBeLessThan(delayMs - 1000);

      // a replica that is not stopping takes the same agent
      expect(await handshake(agent(other.url, token))).toBe('connected');
    } finally {
      for (const made of agents) made.close();
      await closed;
      await other.close();
    }
  });
});

/** Redis made to stop answering, and brought back (so that any stop still waiting can end). */
interface Outage {
  name: string;
  begin(redis: RedisProcess, hub: TestHub): Promise<void>;
  end(redis: RedisProcess): Promise<void>;
}
const OUTAGES: Outage[] = [
  {
    name: 'frozen (SIGSTOP: its connections stay open and `ready`)',
    begin: async (redis) => {
      process.kill(redis.pid!, 'SIGSTOP');
    },
    end: async (redis) => {
      process.kill(redis.pid!, 'SIGCONT');
    },
  },
  {
    name: 'down (SIGKILL)',
    begin: async (redis, hub) => {
      await redis.stop('SIGKILL');
      await eventually(() => (hub.redis.command.status !== 'ready' ? true : undefined), {
        what: 'the hub to see Redis go',
      });
    },
    end: (redis) => redis.restart(),
  },
];

describe.each(OUTAGES)('a replica stopped while Redis is $name', (outage) => {
  let redis: RedisProcess;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.dispose();
  });

  it('tells its agents to move at once, and the stop ends within its bounds, below the exit deadline', async () => {
    const hub = await startTestHub(redis.url, { SHUTDOWN_GRACE_MS: '4000' });
    const deadlineMs = exitDeadlineMs(hub.config); // when main.ts would exit 1: 9 s
    const agent = await TestAgent.register(hub.url, 'agent-at-stop');
    // a queue with a task no agent serves: each dispatch step of it runs a script in Redis
    const created = await api(hub.url, 'POST', '/v1/tasks', { queue: 'unserved', payload: {} });
    expect(created.status).toBe(201);
    const draining = new Promise<number>((resolve) =>
      agent.socket.once('hub:draining', () => resolve(performance.now())),
    );
    let closing: Promise<number> | undefined;
    let outageOver = false;
    await outage.begin(redis, hub);
    try {
      // once the replica takes Redis for not answering, any dispatch step of before is over or
      // waits for Redis: one under way when the stop begins, waiting on Redis
      await eventually(
        async () => ((await fetch(`${hub.url}/readyz`)).status === 503 ? true : undefined),
        { what: '/readyz 503', timeoutMs: 10_000 },
      );
      hub.dispatcher.trigger('unserved');
      const stopStarted = performance.now();
      closing = hub.close().then(() => performance.now() - stopStarted);
      const toldAfterMs = (await withTimeout(draining, 2000, 'hub:draining')) - stopStarted;
      expect(toldAfterMs).toBeLessThan(500);
      const stoppedAfterMs = await withTimeout(closing, deadlineMs, 'the stop, by the deadline');
      expect(stoppedAfterMs).toBeLessThan(deadlineMs);
      await outage.end(redis);
      outageOver = true;
    } finally {
      agent.close();
      if (!outageOver) await outage.end(redis);
      // a stop that did not end (the old code) ends once Redis answers again
      if (closing) await withTimeout(closing, 30_000, 'the stop to end').catch(() => undefined);
    }
  });
});

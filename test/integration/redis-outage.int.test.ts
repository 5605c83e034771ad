import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { RedisProbe } from '../../hub/src/redis/redis-probe';
import { commandCalls } from '../helpers/commandstats';
import { TEST_ADMIN_KEY, api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

/** How long a request may take to be answered while Redis is down (it used to wait for Redis). */
const ANSWER_BOUND_MS = 3000;

/** A replica on a private Redis of its own for the enclosing describe block. */
function replicaOnPrivateRedis(appendonly: boolean): {
  redis: RedisProcess;
  hub: Hub & { url: string };
} {
  const replica = {} as { redis: RedisProcess; hub: Hub & { url: string } };
  beforeAll(async () => {
    replica.redis = await startRedis({ appendonly });
    replica.hub = await startTestHub(replica.redis.url);
  });
  afterAll(async () => {
    await replica.hub.close();
    await replica.redis.dispose();
  });
  return replica;
}

/** A request to `hub` with the admin key that gives up after {@link ANSWER_BOUND_MS}. */
function boundedRequest(
  hub: { url: string },
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  return fetch(`${hub.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${TEST_ADMIN_KEY}`, 'content-type': 'application/json' },
    signal: AbortSignal.timeout(ANSWER_BOUND_MS),
  });
}

describe('the API while Redis is down', () => {
  const replica = replicaOnPrivateRedis(true);
  const bounded = (path: string, init?: RequestInit) => boundedRequest(replica.hub, path, init);

  it('refuses an agent handshake E_UNAVAILABLE at once, and takes it once Redis is back', async () => {
    const minted = await api<{ token: string }>(replica.hub.url, 'POST', '/v1/agents', {
      agentId: 'agent-in-outage',
    });
    expect(minted.status).toBe(201);
    const agent = new TestAgent(replica.hub.url, 'agent-in-outage', minted.body.token);
    try {
      await replica.redis.stop('SIGKILL');
      try {
        await eventually(() => (replica.hub.redis.command.status !== 'ready' ? true : undefined), {
          what: 'the hub saw Redis go',
        });
        const refused = new Promise<unknown>((resolve) =>
          agent.socket.once('connect_error', (err) => resolve((err as { data?: unknown }).data)),
        );
        agent.socket.connect();
        const timedOut = new Promise((resolve) =>
          setTimeout(() => resolve('no answer'), ANSWER_BOUND_MS),
        );
        expect(await Promise.race([refused, timedOut])).toMatchObject({ code: 'E_UNAVAILABLE' });
      } finally {
        await replica.redis.restart();
      }
      await eventually(async () => ((await bounded('/readyz')).status === 200 ? true : undefined), {
        what: 'ready again',
      });
      await agent.connect();
      expect(agent.socket.connected).toBe(true);
    } finally {
      agent.close();
    }
  });

  it('answers 503 at once, and a task refused then is never created when Redis is back', async () => {
    const document = (await (await fetch(`${replica.hub.url}/docs/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    await replica.redis.stop('SIGKILL');
    try {
      await eventually(() => (replica.hub.redis.command.status !== 'ready' ? true : undefined), {
        what: 'the hub saw Redis go',
      });
      const created = await bounded('/v1/tasks', {
        method: 'POST',
        body: JSON.stringify({ payload: { during: 'outage' } }),
      });
      expect(created.status).toBe(503);
      expect(await created.json()).toMatchObject({ error: { code: 'E_UNAVAILABLE' } });
      expect((await bounded('/v1/tasks')).status).toBe(503);
      // and the API's document declares it
      for (const method of ['post', 'get']) {
        const declared = document.paths['/v1/tasks']?.[method]?.responses['503'];
        expect(JSON.stringify(declared)).toContain('E_UNAVAILABLE');
      }
      // the replica's own metrics still answer (they need no Redis)
      expect((await bounded('/metrics')).status).toBe(200);
    } finally {
      await replica.redis.restart();
    }
    await eventually(async () => ((await bounded('/readyz')).status === 200 ? true : undefined), {
      what: 'ready again',
    });
    const listed = await api<{ tasks: unknown[] }>(replica.hub.url, 'GET', '/v1/tasks');
    expect(listed).toMatchObject({ status: 200, body: { tasks: [] } });
  });
});

describe('the replica while Redis is frozen (SIGSTOP: connections stay open and `ready`)', () => {
  const replica = replicaOnPrivateRedis(false);
  const bounded = (path: string, init?: RequestInit) => boundedRequest(replica.hub, path, init);

  it('turns not ready and answers the API 503 at once, and recovers when Redis resumes', async () => {
    expect((await bounded('/readyz')).status).toBe(200);
    process.kill(replica.redis.pid!, 'SIGSTOP');
    try {
      const problems = await eventually(
        async () => {
          const response = await bounded('/readyz');
          return response.status === 503
            ? ((await response.json()) as { problems: string[] }).problems
            : undefined;
        },
        { what: '/readyz 503 while Redis does not answer', timeoutMs: 10_000 },
      );
      expect(problems.join()).toMatch(/redis/i);
      // the TCP connection is still open: ioredis still calls it ready
      expect(replica.hub.redis.command.status).toBe('ready');
      const created = await bounded('/v1/tasks', {
        method: 'POST',
        body: JSON.stringify({ payload: { during: 'freeze' } }),
      });
      expect(created.status).toBe(503);
      expect(await created.json()).toMatchObject({ error: { code: 'E_UNAVAILABLE' } });
      expect((await bounded('/v1/queues')).status).toBe(503);
      expect((await bounded('/metrics')).status).toBe(200);
    } finally {
      process.kill(replica.redis.pid!, 'SIGCONT');
    }
    await eventually(async () => ((await bounded('/readyz')).status === 200 ? true : undefined), {
      what: 'ready again',
    });
    expect(await api(replica.hub.url, 'GET', '/v1/tasks')).toMatchObject({ status: 200 });
  });

  it('costs one PING per interval however often /readyz and the API are asked', async () => {
    const client = new Redis(replica.redis.url);
    try {
      const before = await commandCalls(client, 'ping');
      const started = Date.now();
      await Promise.all(Array.from({ length: 20 }, () => bounded('/readyz')));
      for (let n = 0; n < 20; n++) {
        expect((await bounded('/readyz')).status).toBe(200);
        expect((await bounded('/v1/queues')).status).toBe(200);
      }
      const intervals = Math.ceil((Date.now() - started) / 1000);
      expect((await commandCalls(client, 'ping')) - before).toBeLessThanOrEqual(intervals + 1);
    } finally {
      client.disconnect();
    }
  });
});

describe("ioredis' offline queue while Redis is down", () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    redis = await startRedis({ appendonly: true });
    // A 60 s heartbeat period: no timer of the replica's own falls in the outage below, so the
    // count is the agents' heartbeats, the disconnect and the serialised timers.
    hub = await startTestHub(redis.url, { HEARTBEAT_MS: '60000', LEASE_MS: '120000' });
  });
  afterAll(async () => {
    for (const agent of agents) agent.close();
    await hub.close();
    await redis.dispose();
  });

  const queued = (): number =>
    (hub.redis.command as unknown as { offlineQueue: { length: number } }).offlineQueue.length;
  const heartbeat = (agent: TestAgent, timeoutMs: number) =>
    agent.socket.timeout(timeoutMs).emitWithAck('agent:heartbeat', {}) as Promise<{
      ok: boolean;
      state?: string;
    }>;

  it('holds at most one heartbeat check per connected agent, however long the outage; recorded disconnects still apply when Redis is back', async () => {
    for (let n = 0; n < 4; n++) agents.push(await TestAgent.register(hub.url, `beating-${n}`));
    const leaver = await TestAgent.register(hub.url, 'leaver');
    await redis.stop('SIGTERM');
    const seen = { before: 0, most: 0, beats: 0 };
    try {
      await eventually(() => (hub.redis.command.status !== 'ready' ? true : undefined), {
        what: 'the hub saw Redis go',
      });
      seen.before = queued();
      leaver.close(); // its disconnect is recorded when Redis is back
      // The outage: for 4 s every agent heartbeats as a sidecar does when its ack times out,
      // here every 100 ms (a sidecar: every 10 s, for as long as the outage lasts). A beat the
      // replica refuses at once (32 in flight) waits for the next interval too, as a sidecar's
      // does: beating again at once would be a flood, and the replica closes a flooder.
      const until = Date.now() + 4000;
      await Promise.all(
        agents.map(async (agent) => {
          while (Date.now() < until) {
            seen.beats++;
            const interval = new Promise((resolve) => setTimeout(resolve, 100));
            await heartbeat(agent, 100).catch(() => undefined);
            await interval;
            seen.most = Math.max(seen.most, queued());
          }
        }),
      );
    } finally {
      await redis.restart();
    }
    expect(seen.beats).toBeGreaterThan(4 * 20);
    // one check per agent, the disconnect, and what the serialised timers hold
    expect(seen.most - seen.before).toBeLessThanOrEqual(agents.length + 4);
    // the checks held during the outage are answered, then each agent's heartbeats are again
    for (const agent of agents) {
      await eventually(
        async () => {
          const ack = await heartbeat(agent, 10_000);
          return ack.ok && ack.state === 'idle' ? true : undefined;
        },
        { what: `${agent.agentId} heartbeating idle again` },
      );
    }
    await eventually(
      async () => {
        const { body } = await api<{ state: string }>(hub.url, 'GET', '/v1/agents/leaver');
        return body.state === 'offline' ? true : undefined;
      },
      { what: 'the disconnect during the outage recorded' },
    );
  });
});

describe('the Redis probe across a reconnect', () => {
  let redis: RedisProcess;
  let client: Redis;
  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url, { maxRetriesPerRequest: null, retryStrategy: () => 20 });
  });
  afterAll(async () => {
    client.disconnect();
    await redis.dispose();
  });

  it('does not take Redis for not answering the moment a new connection is ready (a PING sent before the drop is forgotten)', async () => {
    const probe = new RedisProbe(client, { intervalMs: 1000, timeoutMs: 300 });
    await eventually(() => (client.status === 'ready' ? true : undefined), { what: 'ready' });
    expect(await probe.problem()).toBeUndefined();
    process.kill(redis.pid!, 'SIGSTOP');
    // the last answer stands for an interval; after it a PING is sent and goes unanswered
    const frozen = await eventually(
      async () => {
        const problem = await probe.problem();
        return problem?.includes('not answering') ? problem : undefined;
      },
      { what: 'the probe saw the frozen Redis' },
    );
    expect(frozen).toMatch(/PING unanswered/);
    // Redis dies with that PING unanswered and comes back on the same port
    await redis.stop('SIGKILL');
    const problemWhenReady = new Promise<string | undefined>((resolve) =>
      client.once('ready', () => void Promise.resolve(probe.problem()).then(resolve)),
    );
    await redis.restart();
    expect(await problemWhenReady).toBeUndefined();
  });
});

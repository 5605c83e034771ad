import type { TaskAssign } from '@agentcom/shared';
import { Queue, type JobType } from 'bullmq';
import { api, eventually, startTestHub } from '../helpers/hub';
import { commandCalls } from '../helpers/commandstats';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';
import { MAX_SERVED_QUEUES } from '../../hub/src/queues/queue-registry';

interface QueueSummary {
  name: string;
  counts: Record<string, number>;
  idleAgents: number;
}

const ZERO_COUNTS = { waiting: 0, prioritized: 0, delayed: 0, active: 0, completed: 0, failed: 0 };

/**
 * `GET /v1/queues` lists every queue tasks were added to and every queue a connected agent serves
 * without reading agent records (it read all of them, one HGETALL each, on every request).
 */
describe('GET /v1/queues', () => {
  const fixture = useTestHub();

  const summary = async (url = fixture.hub.url): Promise<QueueSummary[]> => {
    const response = await api<{ queues: QueueSummary[] }>(url, 'GET', '/v1/queues');
    expect(response.status).toBe(200);
    return response.body.queues;
  };
  const entry = async (name: string, url?: string): Promise<QueueSummary | undefined> =>
    (await summary(url)).find((queue) => queue.name === name);

  /** A connected agent serving `queues`, once its connection and what it serves are recorded. */
  const connectAgent = async (agentId: string, queues: string[]): Promise<TestAgent> => {
    const agent = await TestAgent.register(fixture.hub.url, agentId, queues);
    fixture.agents.push(agent);
    const { admin, hub } = fixture;
    await eventually(
      async () => {
        const state = (await api<{ state: string }>(hub.url, 'GET', `/v1/agents/${agentId}`)).body
          .state;
        const served = await admin.zmscore(hub.keys.servedQueues, ...queues);
        return (state === 'idle' && served.every((score) => score !== null)) || undefined;
      },
      { what: `${agentId} idle, its queues recorded` },
    );
    return agent;
  };

  it('lists the queues connected agents serve, with 1,000 agent records, reading none of them', async () => {
    const ids = Array.from({ length: 1000 }, (_, i) => `offline-${i}`);
    for (let i = 0; i < ids.length; i += 50) {
      await Promise.all(
        ids.slice(i, i + 50).map(async (agentId) => {
          const created = await api(fixture.hub.url, 'POST', '/v1/agents', { agentId });
          expect(created.status).toBe(201);
        }),
      );
    }
    await connectAgent('server-1', ['served-only', 'served-too']);
    const tasks = [1, 2, 3].map((payload) => ({ queue: 'unserved', payload }));
    expect((await api(fixture.hub.url, 'POST', '/v1/tasks/batch', { tasks })).status).toBe(201);

    const before = await commandCalls(fixture.admin, 'hgetall');
    const queues = await summary();
    const hgetalls = (await commandCalls(fixture.admin, 'hgetall')) - before;

    expect(queues).toEqual([
      { name: 'served-only', counts: ZERO_COUNTS, idleAgents: 1 },
      { name: 'served-too', counts: ZERO_COUNTS, idleAgents: 1 },
      { name: 'unserved', counts: { ...ZERO_COUNTS, waiting: 3 }, idleAgents: 0 },
    ]);
    // one per agent record before (1,001); a sweep running meanwhile may read a record or two
    expect(hgetalls).toBeLessThan(10);
  });

  it('counts the tasks of each state as BullMQ does', async () => {
    const agent = await connectAgent('worker-1', ['mixed']);
    const create = (task: Record<string, unknown>) =>
      api(fixture.hub.url, 'POST', '/v1/tasks', { queue: 'mixed', attempts: 1, ...task });
    const pushed = async (payload: string): Promise<TaskAssign> => {
      const next = agent.nextAssignment();
      expect((await create({ payload })).status).toBe(201);
      const msg = await next;
      expect((await agent.accept(msg)).ok).toBe(true);
      return msg;
    };
    expect((await agent.complete(await pushed('completes'), 'done')).ok).toBe(true);
    const failing = await pushed('fails');
    expect((await agent.fail(failing, { error: 'broken', retryable: false })).ok).toBe(true);
    await pushed('runs on'); // the agent now works on it: the next ones wait
    for (const task of [{ payload: 'waits' }, { payload: 'later', delayMs: 60_000 }]) {
      expect((await create(task)).status).toBe(201);
    }
    expect((await create({ payload: 'ranked', priority: 5 })).status).toBe(201);

    const queue = new Queue('mixed', {
      connection: fixture.admin,
      prefix: fixture.hub.keys.bullPrefix,
    });
    try {
      const states = Object.keys(ZERO_COUNTS) as JobType[];
      const bullmq = await queue.getJobCounts(...states);
      expect(bullmq).toEqual({
        waiting: 1,
        prioritized: 1,
        delayed: 1,
        active: 1,
        completed: 1,
        failed: 1,
      });
      expect(await entry('mixed')).toEqual({ name: 'mixed', counts: bullmq, idleAgents: 0 });
    } finally {
      await queue.close();
    }
  });

  it('keeps listing a served queue, with zeros, once its last agent has gone', async () => {
    const agent = await connectAgent('leaving-1', ['leaving']);
    expect(await entry('leaving')).toEqual({ name: 'leaving', counts: ZERO_COUNTS, idleAgents: 1 });
    agent.close();
    await eventually(
      async () =>
        (await api<{ state: string }>(fixture.hub.url, 'GET', '/v1/agents/leaving-1')).body
          .state === 'offline' || undefined,
      { what: 'leaving-1 offline' },
    );
    expect(await entry('leaving')).toEqual({ name: 'leaving', counts: ZERO_COUNTS, idleAgents: 0 });
  });

  it('keeps the 1,000 queues served last: an agent naming made-up queues cannot grow the listing without end', async () => {
    // 1,000 names served earlier (as agents reconnecting with made-up names leave them)
    const old = Array.from({ length: MAX_SERVED_QUEUES }, (_, i) => `made-up-${i}`);
    await fixture.admin.zadd(fixture.hub.keys.servedQueues, ...old.flatMap((name, i) => [i, name]));
    await connectAgent('fresh-1', ['fresh-a', 'fresh-b']);

    expect(await fixture.admin.zcard(fixture.hub.keys.servedQueues)).toBe(MAX_SERVED_QUEUES);
    const names = (await summary()).map((queue) => queue.name);
    expect(names).toEqual(expect.arrayContaining(['fresh-a', 'fresh-b', 'made-up-999']));
    // those served longest ago made room for the fresh ones (and those earlier tests' agents serve)
    expect(names).not.toContain('made-up-0');
    expect(names).not.toContain('made-up-1');
    const served = await fixture.admin.zrange(fixture.hub.keys.servedQueues, '0', '-1');
    const kept = served.filter((name) => name.startsWith('made-up-'));
    expect(kept).toEqual(old.slice(old.length - kept.length));
  });

  it('lists, on a replica started on a Redis written before the served set, what connected agents serve', async () => {
    await connectAgent('legacy-1', ['legacy']);
    // as the previous version left Redis: agent records, no served set
    await fixture.admin.del(fixture.hub.keys.servedQueues);
    expect(await entry('legacy')).toBeUndefined();

    const started = await startTestHub(fixture.redis.url, {
      AGENTCOM_PREFIX: fixture.hub.config.prefix,
    });
    try {
      expect(await entry('legacy', started.url)).toEqual({
        name: 'legacy',
        counts: ZERO_COUNTS,
        idleAgents: 1,
      });
      // the agents that were offline then are not listed again
      expect(await entry('leaving', started.url)).toBeUndefined();
    } finally {
      await started.close();
    }
  });
});

import { randomBytes } from 'node:crypto';
import type { TaskAssign, TaskCancel, TaskFail } from '@agentcom/shared';
import { Redis } from 'ioredis';
import { Presence } from '../../hub/src/agents/presence';
import { LeaseKeeper } from '../../hub/src/dispatch/lease-keeper';
import { Sweeper } from '../../hub/src/dispatch/sweeper';
import { AgentStore } from '../../hub/src/fsm/agent-store';
import type { Hub } from '../../hub/src/hub';
import { createLogger } from '../../hub/src/logger';
import { QueueRegistry } from '../../hub/src/queues/queue-registry';
import { RedisKeys } from '../../hub/src/redis/keys';
import { RedisClock } from '../../hub/src/redis/redis-clock';
import { agentScripts } from '../../hub/src/redis/scripts';
import { api, eventually, startTestHub } from '../helpers/hub';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { startRedis } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

/** The sweeper against a real Redis and in-process replicas, with protocol-level agents. */
describe('sweeper', () => {
  const fixture = useHubsFixture();
  const { hubs, agents } = fixture;
  let admin: Redis;

  beforeAll(() => {
    admin = new Redis(fixture.redis.url);
  });
  afterAll(() => {
    admin.disconnect();
  });

  const startHub = async (env: Record<string, string> = {}) => {
    const hub = await startTestHub(fixture.redis.url, env);
    hubs.push(hub);
    return hub;
  };
  const register = async (hubUrl: string) => {
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await TestAgent.register(hubUrl, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return { agent, queue };
  };
  /** An agent that was pushed a task (with `task` options) and, if `accept`, accepted it. */
  const holding = async (hub: Hub & { url: string }, task: object, accept: boolean) => {
    const { agent, queue } = await register(hub.url);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      ...task,
    });
    expect(created.status).toBe(201);
    const msg = await assigned;
    if (accept) expect(await agent.accept(msg)).toMatchObject({ ok: true });
    return { agent, msg };
  };
  const record = (hub: Hub, agentId: string) =>
    admin.hgetall(hub.keys.agent(agentId)) as Promise<Record<string, string>>;

  it('acts only on records that are overdue themselves, not on what a stale due list names', async () => {
    // The sweep lists the agents due in an index, then reads each record: by then an agent may
    // hold its next task (a long sweep, or another replica's list). Here the index itself names
    // two agents as due whose current assignments are not: as a stale list would.
    const hub = await startHub({
      ACK_TIMEOUT_MS: '60000',
      LEASE_MS: '120000',
      RUN_TIMEOUT_GRACE_MS: '60000',
    });
    const unaccepted = await holding(hub, {}, false);
    const running = await holding(hub, { timeoutMs: 60_000 }, true);
    await admin.zadd(hub.keys.ackDeadlines, 1, unaccepted.agent.agentId);
    await admin.zadd(hub.keys.runDeadlines, 1, running.agent.agentId);
    // An agent whose task is overdue for real: once it is told, a sweep has passed over the
    // other two (ack deadlines come first in a sweep, run deadlines by score).
    const overdue = await holding(hub, { timeoutMs: 300 }, true);
    const told = new Promise((resolve) => overdue.agent.once('cancel', resolve));
    expect(await told).toEqual({
      taskId: overdue.msg.task.id,
      reason: 'timeout',
      token: overdue.msg.token,
    });

    expect(unaccepted.agent.cancels).toEqual([]);
    expect(running.agent.cancels).toEqual([]);
    expect(await record(hub, unaccepted.agent.agentId)).toMatchObject({
      state: 'assigned',
      taskId: unaccepted.msg.task.id,
    });
    const held = await record(hub, running.agent.agentId);
    expect(held).toMatchObject({ state: 'working', taskId: running.msg.task.id });
    expect(held.timeoutNotifiedAt).toBeUndefined();
  });

  it('does not time out a task without a run timeout when a stale entry lists its agent', async () => {
    // A run-deadline entry listed for a timed task that ended since (its sidecar stopped it at
    // the deadline and reported): by the time the record is read, the agent works on its next
    // task, one with no run timeout. Here the index names the agent as a stale list would.
    const hub = await startHub();
    const untimed = await holding(hub, {}, true);
    await admin.zadd(hub.keys.runDeadlines, 1, untimed.agent.agentId);
    // a sweep has passed over the stale entry (run deadlines by score) once this one is told
    const overdue = await holding(hub, { timeoutMs: 300 }, true);
    const told = new Promise((resolve) => overdue.agent.once('cancel', resolve));
    expect(await told).toMatchObject({ taskId: overdue.msg.task.id, reason: 'timeout' });

    const held = await record(hub, untimed.agent.agentId);
    expect(held).toMatchObject({ state: 'working', taskId: untimed.msg.task.id });
    expect(held.timeoutNotifiedAt).toBeUndefined();
    expect(untimed.agent.cancels).toEqual([]);
    // the stale entry is gone: it is not listed (nor read) again at every sweep
    expect(await admin.zscore(hub.keys.runDeadlines, untimed.agent.agentId)).toBeNull();
    expect(await untimed.agent.complete(untimed.msg, 'done')).toEqual({ ok: true });
  });

  it('does not end a rest that a stale cooldown entry lists', async () => {
    // A cooldown entry listed for a rest that ended: by the time the record is read, the agent
    // may rest again (it took a task, reported a rate limit). Here the index names the agent as
    // a stale list would, while its record rests for an hour.
    const hub = await startHub();
    const { agent, queue } = await register(hub.url);
    const assigned = agent.nextAssignment();
    await api(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    const msg = await assigned;
    const until = Date.now() + 60 * 60 * 1000;
    expect(
      await agent.fail(msg, { error: 'quota', retryable: true, rateLimitedUntil: until }),
    ).toMatchObject({ ok: true });
    expect(await record(hub, agent.agentId)).toMatchObject({
      state: 'cooldown',
      cooldownUntil: String(until),
    });
    await admin.zadd(hub.keys.cooldowns, 1, agent.agentId);
    // cooldowns come before run deadlines in a sweep: one has passed once this one is told
    const overdue = await holding(hub, { timeoutMs: 300 }, true);
    const told = new Promise((resolve) => overdue.agent.once('cancel', resolve));
    expect(await told).toMatchObject({ taskId: overdue.msg.task.id, reason: 'timeout' });

    expect(await record(hub, agent.agentId)).toMatchObject({
      state: 'cooldown',
      cooldownUntil: String(until),
    });
    expect(agent.assignments).toHaveLength(1);
  });

  it('after the run-timeout backstop fails an attempt, tells the agent to stop before the retry can reach it', async () => {
    // The failure claims the freed agent for the next job in the same script: with one agent,
    // the retry of the same task. A cancel names the task, not the assignment, so one sent
    // after the retry's push would stop the retry.
    const hub = await startHub({ RUN_TIMEOUT_GRACE_MS: '300' });
    const { agent, queue } = await register(hub.url);
    const seen: string[] = [];
    agent.on('assign', (msg: TaskAssign) => seen.push(`assign ${msg.attempt}`));
    agent.on('cancel', (msg: TaskCancel) => seen.push(`cancel ${msg.reason}`));
    const first = agent.nextAssignment();
    await api(hub.url, 'POST', '/v1/tasks', { queue, payload: {}, attempts: 2, timeoutMs: 300 });
    expect(await agent.accept(await first)).toMatchObject({ ok: true });
    const retry = await agent.nextAssignment(10_000); // no report: the backstop fails attempt 1
    expect(retry.attempt).toBe(2);
    // one socket, in order: whatever was sent before the accept's answer has arrived
    expect(await agent.accept(retry)).toMatchObject({ ok: true });
    expect(seen).toEqual(['assign 1', 'cancel timeout', 'cancel superseded', 'assign 2']);
    expect(await agent.complete(retry, 'done')).toEqual({ ok: true });
  });

  it("after another replica's backstop failed an attempt, the agent's replica does not cancel the retry when it loses the old lease", async () => {
    // the agent is connected to R, which extends its lease; S (sweeping) applies the backstop
    const prefix = `l${randomBytes(3).toString('hex')}`;
    const replica = await startHub({ AGENTCOM_PREFIX: prefix, SWEEP_MS: '60000' });
    const sweeping = await startHub({ AGENTCOM_PREFIX: prefix, RUN_TIMEOUT_GRACE_MS: '300' });
    const { agent, queue } = await register(replica.url);
    const seen: string[] = [];
    agent.on('assign', (msg: TaskAssign) => seen.push(`assign ${msg.attempt}`));
    agent.on('cancel', (msg: TaskCancel) => seen.push(`cancel ${msg.reason}`));
    const first = agent.nextAssignment();
    await api(sweeping.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      attempts: 2,
      timeoutMs: 300,
    });
    const msg = await first;
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    expect(replica.leases.heldBy(agent.agentId)).toMatchObject({ token: msg.token });
    const retry = await agent.nextAssignment(10_000); // S failed attempt 1, the retry came back
    expect(retry.attempt).toBe(2);
    // R's next lease tick finds the old lock gone
    await eventually(async () => (replica.leases.heldBy(agent.agentId) ? undefined : true), {
      what: "R's lease tick",
    });
    expect(await agent.accept(retry)).toMatchObject({ ok: true });
    expect(seen).toEqual(['assign 1', 'cancel timeout', 'cancel superseded', 'assign 2']);
    expect(await agent.complete(retry, 'done')).toEqual({ ok: true });
  });

  it('refreshes its liveness on its own timer, however long between sweeps', async () => {
    // others take a replica for gone after 3 heartbeat intervals (1.5 s here) without a refresh
    const hub = await startHub({ SWEEP_MS: '60000', HEARTBEAT_MS: '500', LEASE_MS: '3000' });
    const liveness = async () => Number(await admin.zscore(hub.keys.replicas, hub.config.hubId));
    const first = await eventually(async () => (await liveness()) || undefined, {
      what: 'the first liveness refresh',
    });
    await eventually(
      async () => {
        return (await liveness()) >= first + 1000 ? true : undefined;
      },
      { what: 'two liveness refreshes with no sweep between them', timeoutMs: 5000 },
    );
  });
});

describe('the run-timeout backstop, swept by two replicas at once', () => {
  it('is applied by one of them: one cancel, one failure of the attempt', async () => {
    const server = await startRedis();
    const redis = new Redis(server.url);
    const registries: QueueRegistry[] = [];
    try {
      const keys = new RedisKeys(`b${randomBytes(3).toString('hex')}`);
      const agents = new AgentStore({ redis, scripts: agentScripts(redis), keys, hubId: 'hub-a' });
      // agent `a` works on t1, was told of its run timeout, and the grace has run out since
      await agents.register('a', 'h'.repeat(64));
      const now = Date.now();
      const steps = [
        { from: 'offline', to: 'idle', reason: 'connect', set: { queues: 'q1', socketId: 's-a' } },
        { from: 'idle', to: 'assigned', reason: 'assign', set: { taskId: 't1', token: 'a:tok' } },
        { from: 'assigned', to: 'working', reason: 'accept', set: { taskQueue: 'q1' } },
        {
          from: 'working',
          to: 'working',
          reason: 'timeout',
          set: { taskTimeoutMs: 300, timeoutNotifiedAt: now - 1000 },
          index: { runDeadline: now - 500 },
        },
      ] as const;
      for (const step of steps) {
        expect((await agents.transition({ agentId: 'a', ...step })).ok).toBe(true);
      }
      const cancels: Array<[string, TaskCancel]> = [];
      const failures: Array<[string, TaskFail]> = [];
      const sweeper = (hubId: string) => {
        const logger = createLogger({ level: 'silent', hubId });
        const queues = new QueueRegistry({
          connection: redis,
          keys,
          leaseMs: 60_000,
          stalledIntervalMs: 15_000,
          maxStalledCount: 1,
          logger,
          onWaiting: () => undefined,
        });
        registries.push(queues);
        const leases = new LeaseKeeper({
          queues,
          leaseMs: 60_000,
          heartbeatMs: 5000,
          logger,
          onLeaseLost: () => undefined,
        });
        return new Sweeper({
          redis,
          keys,
          clock: new RedisClock({ redis }),
          agents,
          presence: new Presence({
            redis,
            keys,
            agents,
            queues,
            leases,
            hubId,
            logger,
            onAgentIdle: () => undefined,
            onTaskWaiting: () => undefined,
          }),
          notifier: {
            cancel: (agentId, msg) => cancels.push([agentId, msg]),
            assign: () => undefined,
            closeStaleTokenConnections: () => undefined,
          },
          hubId,
          leaseMs: 60_000,
          ackTimeoutMs: 10_000,
          ackCooldownMaxMs: 300_000,
          heartbeatMs: 5000,
          sweepMs: 1000,
          runTimeoutGraceMs: 500,
          logger,
          onAgentIdle: () => undefined,
          failAttempt: async (agentId, report) => {
            failures.push([agentId, report]);
          },
        });
      };
      // both list the agent and read its record before either acts on it
      await Promise.all([sweeper('hub-a').sweep(), sweeper('hub-b').sweep()]);
      expect(cancels).toEqual([['a', { taskId: 't1', reason: 'superseded', token: 'a:tok' }]]);
      expect(failures).toEqual([
        ['a', expect.objectContaining({ taskId: 't1', token: 'a:tok', kind: 'timeout' })],
      ]);
    } finally {
      await Promise.all(registries.map((queues) => queues.close()));
      redis.disconnect();
      await server.dispose();
    }
  });
});

describe('replica liveness between replicas whose clocks disagree', () => {
  const fixture = useHubsFixture();

  it('a replica whose clock runs ahead does not take the others for gone, and still finds a silent one', async () => {
    // `hub` refreshes its liveness every 250 ms; the other replica's machine is 20 s ahead
    // (more than the three heartbeats, 1.5 s here, that make a replica gone)
    const hub = await startTestHub(fixture.redis.url, { HEARTBEAT_MS: '500' });
    fixture.hubs.push(hub);
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`);
    fixture.agents.push(agent);
    const redis = new Redis(fixture.redis.url);
    const logger = createLogger({ level: 'silent', hubId: 'ahead' });
    const queues = new QueueRegistry({
      connection: redis,
      keys: hub.keys,
      leaseMs: 3000,
      stalledIntervalMs: 1000,
      maxStalledCount: 1,
      logger,
      onWaiting: () => undefined,
    });
    try {
      const clock = new RedisClock({ redis, localNow: () => Date.now() + 20_000 });
      const agents = new AgentStore({
        redis,
        scripts: agentScripts(redis),
        keys: hub.keys,
        hubId: 'ahead',
        now: clock.now,
      });
      const leases = new LeaseKeeper({
        queues,
        leaseMs: 3000,
        heartbeatMs: 500,
        logger,
        onLeaseLost: () => undefined,
      });
      const ahead = new Sweeper({
        redis,
        keys: hub.keys,
        clock,
        agents,
        presence: new Presence({
          redis,
          keys: hub.keys,
          agents,
          queues,
          leases,
          hubId: 'ahead',
          logger,
          onAgentIdle: () => undefined,
          onTaskWaiting: () => undefined,
        }),
        notifier: {
          cancel: () => undefined,
          assign: () => undefined,
          closeStaleTokenConnections: () => undefined,
        },
        hubId: 'ahead',
        leaseMs: 3000,
        ackTimeoutMs: 2000,
        ackCooldownMaxMs: 300_000,
        heartbeatMs: 500,
        sweepMs: 200,
        runTimeoutGraceMs: 10_000,
        logger,
        onAgentIdle: () => undefined,
        failAttempt: async () => undefined,
      });
      const before = await eventually(
        async () => {
          const seen = await redis.hgetall(hub.keys.agent(agent.agentId));
          return seen.state === 'idle' ? seen : undefined;
        },
        { what: 'the agent recorded idle' },
      );
      expect(await redis.zscore(hub.keys.replicas, hub.config.hubId)).not.toBeNull();
      // a replica that went silent 10 s ago, by Redis's clock
      const [seconds] = await redis.time();
      await redis.zadd(hub.keys.replicas, Number(seconds) * 1000 - 10_000, 'silent');

      await ahead.sweep();

      expect(await redis.zscore(hub.keys.replicas, 'silent')).toBeNull();
      expect(await redis.hgetall(hub.keys.agent(agent.agentId))).toMatchObject({
        state: 'idle',
        hubId: hub.config.hubId,
        socketId: before.socketId,
      });
    } finally {
      await queues.close();
      redis.disconnect();
    }
  });
});

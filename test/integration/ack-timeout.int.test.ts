import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { AgentView, TaskAssign, TaskView } from '@agentcom/shared';
import { pino } from 'pino';
import { loadConfig } from '../../hub/src/config';
import { startHub as startReplica, type Hub } from '../../hub/src/hub';
import { api, eventually, FAST_TIMINGS, startTestHub, TEST_ADMIN_KEY } from '../helpers/hub';
import { readTransitions, type TransitionEvent } from '../helpers/invariants';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { TestAgent } from '../helpers/test-agent';

const ACK_TIMEOUT_MS = 1000;

/**
 * An agent that is connected but never accepts its `task:assign` (a hung or broken sidecar):
 * after the ack timeout it rests in `cooldown` for a while, so the task goes to a healthy agent
 * instead of being pushed to the silent one again and again. Real Redis, real hubs and sockets.
 */
describe('an agent that does not accept its task in time', () => {
  // The block's Redis. Its tests are independent of each other (each starts its own replicas, with
  // a key prefix, queue and agents of its own) and spend most of their time waiting out ack
  // timeouts and cooldowns: they run concurrently (Jest's maxConcurrency at a time), each closing
  // what it started when it ends (`afterEach` does not run around a concurrent test).
  const fixture = useHubsFixture();
  /** The replicas and agents a test started, closed when it ends (pass or fail). */
  interface Started {
    hubs: Array<Hub & { url: string }>;
    agents: TestAgent[];
  }
  /** Those of the test whose code runs (the helpers below are called in its async context). */
  const running = new AsyncLocalStorage<Started>();
  const started = (): Started => {
    const own = running.getStore();
    if (!own) throw new Error('started outside of a test of this block');
    return own;
  };
  /**
   * Replicas start one at a time: a start is a burst of work on this process's event loop, which
   * every test's agents and replicas share; on a loaded machine five at once stalled it for up to
   * 0.4 s, a large part of the ack timeout (1 s) some of the tests must answer within.
   */
  let lastStart: Promise<unknown> = Promise.resolve();
  const oneStartAtATime = <T>(start: () => Promise<T>): Promise<T> => {
    const next = lastStart.then(start);
    lastStart = next.catch(() => undefined);
    return next;
  };
  /** This block's `test`: concurrent (`it.concurrent`), and it closes what it started. */
  const test = (name: string, body: () => Promise<void>) =>
    it.concurrent(name, async () => {
      const own: Started = { hubs: [], agents: [] };
      try {
        await running.run(own, body);
      } finally {
        for (const agent of own.agents) agent.close();
        for (const hub of own.hubs) await hub.close();
      }
    });

  const startHub = async (env: Record<string, string>) => {
    const hub = await oneStartAtATime(() =>
      startTestHub(fixture.redis.url, {
        ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS),
        SWEEP_MS: '100',
        ...env,
      }),
    );
    started().hubs.push(hub);
    return hub;
  };
  const register = async (hubUrl: string, queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(hubUrl, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    started().agents.push(agent);
    return agent;
  };
  const createTask = async (hubUrl: string, body: Record<string, unknown>): Promise<string> => {
    const created = await api<{ id: string }>(hubUrl, 'POST', '/v1/tasks', body);
    expect(created.status).toBe(201);
    return created.body.id;
  };
  const getTask = async (hubUrl: string, id: string): Promise<TaskView> =>
    (await api<TaskView>(hubUrl, 'GET', `/v1/tasks/${id}`)).body;
  /** Connects `agent` again and waits for the hub to record the new connection. */
  const reconnectRecorded = async (hub: Hub & { url: string }, agent: TestAgent) => {
    const again = await agent.reconnectTo(hub.url);
    started().agents.push(again);
    const record = await eventually(
      async () => {
        const current = await hub.agents.get(agent.agentId);
        return current?.socketId === again.socket.id ? current : undefined;
      },
      { what: 'the new connection recorded' },
    );
    return { again, record };
  };

  test('rests in cooldown, and a healthy agent connected later gets the task meanwhile', async () => {
    // Two replicas. Only A sweeps (B's sweep runs once at start), so A finds the ack timeout
    // and A's dispatch step runs next: a step prefers an agent connected to its own replica,
    // and the silent agent is A's, the healthy one B's.
    const prefix = `k${randomBytes(3).toString('hex')}`;
    const hubA = await startHub({ AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-a' });
    const hubB = await startHub({ AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-b', SWEEP_MS: '60000' });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const silent = await register(hubA.url, queue);
    const first = silent.nextAssignment();
    const id = await createTask(hubA.url, { queue, payload: {} });
    expect((await first).task.id).toBe(id);

    const healthy = await register(hubB.url, queue);
    // one ack timeout, then a sweep and a dispatch step (a bound with room for a loaded machine)
    const msg = await healthy.nextAssignment(4 * ACK_TIMEOUT_MS).catch((err: Error) => {
      throw new Error(`${err.message}; the silent agent got it ${silent.assignments.length} times`);
    });
    expect(msg).toMatchObject({ task: { id }, attempt: 1 });
    expect(silent.assignments.map((a) => a.task.id)).toEqual([id]);
    await eventually(() => (silent.cancels.length > 0 ? true : undefined), {
      what: 'the silent agent told its task is superseded',
    });
    expect(silent.cancels).toEqual([
      { taskId: id, reason: 'superseded', token: silent.assignments[0]?.token },
    ]);
    const timedOut = (await readTransitions(fixture.redis.url, prefix)).filter(
      (event) => event.agent === silent.agentId && event.reason === 'ack_timeout',
    );
    expect(timedOut).toMatchObject([{ from: 'assigned', to: 'cooldown', task: id }]);

    expect(await healthy.accept(msg)).toMatchObject({ ok: true });
    expect(await healthy.complete(msg, 'ok')).toEqual({ ok: true });
    expect(await getTask(hubA.url, id)).toMatchObject({
      state: 'completed',
      agentId: healthy.agentId,
      attempt: 1,
      attemptsMade: 1,
    });

    // the cooldown ends: the silent agent is idle again
    await eventually(
      async () => ((await hubA.agents.get(silent.agentId))?.state === 'idle' ? true : undefined),
      { what: 'the silent agent idle again', timeoutMs: 5 * ACK_TIMEOUT_MS },
    );
  });

  test('counts no attempt in the task view for an ack timeout, as task:assign does', async () => {
    const hub = await startHub({});
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const silent = await register(hub.url, queue);
    const pushes: TaskAssign[] = [];
    const twice = new Promise<void>((resolve) => {
      silent.on('assign', (msg: TaskAssign) => {
        pushes.push(msg);
        if (pushes.length === 2) resolve();
      });
    });
    const id = await createTask(hub.url, { queue, payload: {}, attempts: 3 });
    // alone in its queue, the silent agent gets the task again once its cooldown ends
    await twice;
    expect(pushes.map((p) => [p.task.id, p.attempt])).toEqual([
      [id, 1],
      [id, 1],
    ]);
    expect(await getTask(hub.url, id)).toMatchObject({
      state: 'assigned',
      agentId: silent.agentId,
      attempt: 1,
      attempts: 3,
      attemptsMade: 0,
    });
    const msg = pushes[1]!;
    expect(await silent.accept(msg)).toMatchObject({ ok: true });
    expect(await getTask(hub.url, id)).toMatchObject({ state: 'running', attempt: 1 });
    expect(await silent.complete(msg, 'done')).toEqual({ ok: true });
    expect(await getTask(hub.url, id)).toMatchObject({ state: 'completed', attempt: 1 });
  });

  test('sends a push the agent did not receive again at its heartbeat, with no ack timeout charged', async () => {
    // A long ack timeout: the push is sent again well before it (1 s after the assignment).
    const prefix = `k${randomBytes(3).toString('hex')}`;
    const hub = await startHub({
      AGENTCOM_PREFIX: prefix,
      ACK_TIMEOUT_MS: '20000',
      LEASE_MS: '60000',
    });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(hub.url, queue);
    const lost = agent.nextAssignment();
    const id = await createTask(hub.url, { queue, payload: { n: 1 }, labels: { k: 'v' } });
    // the test drops this push: a sidecar that never got it names no task in its heartbeats
    const first = await lost;
    expect(first.task.id).toBe(id);

    // a heartbeat sent just after the assignment may have crossed the push: nothing is resent
    expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'assigned' });
    expect(agent.assignments).toHaveLength(1);

    // later ones show the push was lost: it comes again, ahead of the heartbeat's ack
    await eventually(
      async () => {
        const ack = await agent.send('agent:heartbeat', {});
        expect(ack).toMatchObject({ ok: true, state: 'assigned' });
        return agent.assignments.length > 1 ? true : undefined;
      },
      { what: 'the push sent again', timeoutMs: 8_000, intervalMs: 200 },
    );
    expect(agent.assignments).toEqual([first, first]);

    expect(await agent.accept(first)).toMatchObject({ ok: true });
    expect(await agent.complete(first, 'ok')).toEqual({ ok: true });
    expect(await getTask(hub.url, id)).toMatchObject({
      state: 'completed',
      agentId: agent.agentId,
      attempt: 1,
    });
    expect(await hub.agents.get(agent.agentId)).toMatchObject({ state: 'idle', missedAcks: 0 });
    const events = await readTransitions(fixture.redis.url, prefix);
    expect(events.filter((event) => event.agent === agent.agentId).map((e) => e.reason)).toEqual([
      'connect',
      'assign',
      'accept',
      'complete',
    ]);
    const metrics = await hub.metrics.registry.metrics();
    expect(metrics).toMatch(
      new RegExp(`^agentcom_task_pushes_resent_total\\{queue="${queue}",[^}]*\\} 1$`, 'm'),
    );
  });

  /**
   * A replica with a short ack timeout whose log lines (`info` and up, parsed) the test reads:
   * it is the only replica, so the sweep that finds each ack timeout is its own.
   */
  const startLoggedHub = async (env: Record<string, string>) => {
    const logs: Array<Record<string, unknown>> = [];
    const config = loadConfig({
      REDIS_URL: fixture.redis.url,
      PORT: '0',
      HOST: '127.0.0.1',
      AGENTCOM_ADMIN_KEY: TEST_ADMIN_KEY,
      AGENTCOM_PREFIX: `k${randomBytes(3).toString('hex')}`,
      ...FAST_TIMINGS,
      SWEEP_MS: '100',
      ...env,
    });
    const logger = pino(
      { level: 'info' },
      { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) },
    );
    const hub = Object.assign(await oneStartAtATime(() => startReplica(config, logger)), {
      url: '',
    });
    hub.url = `http://127.0.0.1:${hub.port}`;
    started().hubs.push(hub);
    return { hub, prefix: config.prefix, logs };
  };
  const ackTimeoutLogs = (logs: ReadonlyArray<Record<string, unknown>>) =>
    logs
      .filter((line) => typeof line.msg === 'string' && line.msg.startsWith('ack timeout'))
      .map((line) => ({
        level: line.level,
        missedAcks: line.missedAcks,
        cooldownMs: line.cooldownMs,
      }));
  const getAgent = async (hubUrl: string, agentId: string): Promise<AgentView> =>
    (await api<AgentView>(hubUrl, 'GET', `/v1/agents/${agentId}`)).body;
  /** The agent's ack timeouts, each with the end of the cooldown it started (when it ended). */
  const rests = (events: readonly TransitionEvent[], agentId: string) => {
    const own = events.filter((event) => event.agent === agentId);
    return own
      .filter((event) => event.reason === 'ack_timeout')
      .map((missed) => ({
        missed,
        over: own.find((event) => event.reason === 'cooldown_over' && event.at >= missed.at),
      }));
  };
  // pino's numeric levels
  const INFO = 30;
  const WARN = 40;

  test('rests twice as long at each ack timeout in a row, up to ACK_COOLDOWN_MAX_MS, and says so', async () => {
    const ack = 500;
    const { hub, prefix, logs } = await startLoggedHub({
      ACK_TIMEOUT_MS: String(ack),
      ACK_COOLDOWN_MAX_MS: String(4 * ack),
    });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const silent = await register(hub.url, queue);
    const id = await createTask(hub.url, { queue, payload: {} });

    // the fourth miss (logged once the sweep's transition is written): the agent rests, the API
    // shows the count
    const view = await eventually(
      async () => {
        if (ackTimeoutLogs(logs).length < 4) return undefined;
        const agent = await getAgent(hub.url, silent.agentId);
        return agent.missedAcks === 4 && agent.state === 'cooldown' ? agent : undefined;
      },
      { what: 'four ack timeouts in a row', timeoutMs: 40 * ack },
    );
    expect(view.cooldownUntil).toEqual(expect.any(Number));
    // alone in its queue, the silent agent was pushed the same task each time
    expect(new Set(silent.assignments.map((a) => a.task.id))).toEqual(new Set([id]));

    // one ack timeout, then doubled, then bounded (8 ack timeouts unbounded); warned from the second
    expect(ackTimeoutLogs(logs).slice(0, 4)).toEqual([
      { level: INFO, missedAcks: 1, cooldownMs: ack },
      { level: WARN, missedAcks: 2, cooldownMs: 2 * ack },
      { level: WARN, missedAcks: 3, cooldownMs: 4 * ack },
      { level: WARN, missedAcks: 4, cooldownMs: 4 * ack },
    ]);
    // and the cooldowns lasted that long (the sweep's clock may run a little ahead of the event's)
    const ended = rests(await readTransitions(fixture.redis.url, prefix), silent.agentId)
      .slice(0, 3)
      .map(({ missed, over }) => (over ? over.at - missed.at : undefined));
    expect(ended).toEqual([expect.any(Number), expect.any(Number), expect.any(Number)]);
    [ack, 2 * ack, 4 * ack].forEach((rest, i) => expect(ended[i]).toBeGreaterThan(rest - 200));
  });

  test('ends the streak at an accept: the next ack timeout rests one ack timeout again', async () => {
    const { hub, prefix, logs } = await startLoggedHub({
      ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS),
    });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(hub.url, queue);
    await createTask(hub.url, { queue, payload: {} });
    // two misses (one ack timeout of rest, then two), then the agent takes the third push
    const third = await eventually(() => agent.assignments[2], {
      what: 'the third push',
      timeoutMs: 15 * ACK_TIMEOUT_MS,
    });
    expect(await agent.accept(third)).toMatchObject({ ok: true });
    expect((await hub.agents.get(agent.agentId))?.missedAcks).toBe(0);
    expect(await getAgent(hub.url, agent.agentId)).not.toHaveProperty('missedAcks');
    expect(await agent.complete(third, 'ok')).toEqual({ ok: true });

    // a miss after the accept is a first one again
    const next = agent.nextAssignment();
    const id = await createTask(hub.url, { queue, payload: {} });
    expect((await next).task.id).toBe(id);
    const record = await eventually(
      async () => {
        if (ackTimeoutLogs(logs).length < 3) return undefined; // logged after the transition
        const current = await hub.agents.get(agent.agentId);
        return current?.state === 'cooldown' ? current : undefined;
      },
      { what: 'the ack timeout after the accept', timeoutMs: 5 * ACK_TIMEOUT_MS },
    );
    expect(record.missedAcks).toBe(1);
    const missed = rests(await readTransitions(fixture.redis.url, prefix), agent.agentId).at(-1);
    expect(missed?.missed.task).toBe(id);
    // one ack timeout of rest (the streak's third would rest four)
    expect((record.cooldownUntil ?? 0) - (missed?.missed.at ?? 0)).toBeLessThanOrEqual(
      ACK_TIMEOUT_MS,
    );
    expect(ackTimeoutLogs(logs).map((line) => line.missedAcks)).toEqual([1, 2, 1]);
    expect(ackTimeoutLogs(logs).map((line) => line.level)).toEqual([INFO, WARN, INFO]);
  });

  test('keeps the streak and the cooldown across a reconnect', async () => {
    const { hub } = await startLoggedHub({ ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS) });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const silent = await register(hub.url, queue);
    await createTask(hub.url, { queue, payload: {} });
    const resting = await eventually(
      async () => {
        const record = await hub.agents.get(silent.agentId);
        return record?.state === 'cooldown' && record.missedAcks === 2 ? record : undefined;
      },
      { what: 'two ack timeouts in a row', timeoutMs: 15 * ACK_TIMEOUT_MS },
    );
    // reconnecting is no way out of a cooldown (two ack timeouts long now), nor of the streak
    const { record: reconnected } = await reconnectRecorded(hub, silent);
    expect(reconnected).toMatchObject({
      state: 'cooldown',
      cooldownUntil: resting.cooldownUntil,
      missedAcks: 2,
    });
    // still silent: the next miss is the third
    await eventually(
      async () => ((await hub.agents.get(silent.agentId))?.missedAcks === 3 ? true : undefined),
      { what: 'the third ack timeout in a row', timeoutMs: 15 * ACK_TIMEOUT_MS },
    );
  });

  /** Starts a hub and an agent that lets its pushes pass until `missedAcks` reaches `count`. */
  const silentUntil = async (count: number) => {
    const { hub, prefix } = await startLoggedHub({ ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS) });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(hub.url, queue);
    const id = await createTask(hub.url, { queue, payload: {} });
    const resting = await eventually(
      async () => {
        const record = await hub.agents.get(agent.agentId);
        return record?.state === 'cooldown' && record.missedAcks === count ? record : undefined;
      },
      { what: `${count} ack timeouts in a row`, timeoutMs: (4 * count + 4) * ACK_TIMEOUT_MS },
    );
    return { hub, prefix, queue, agent, id, resting };
  };
  const resume = async (hubUrl: string, agentId: string) =>
    api<{ agentId: string; state: string }>(hubUrl, 'POST', `/v1/agents/${agentId}/resume`);

  test("ends the rest at an operator's resume: idle at once, streak gone, pushed the waiting task", async () => {
    // two misses: the agent rests two ack timeouts, its task waits
    const { hub, prefix, agent, id, resting } = await silentUntil(2);
    const pushed = agent.nextAssignment();
    const resumed = await resume(hub.url, agent.agentId);
    expect(resumed).toMatchObject({ status: 200, body: { agentId: agent.agentId, state: 'idle' } });
    const view = await getAgent(hub.url, agent.agentId);
    expect(view).not.toHaveProperty('missedAcks');
    expect(view).not.toHaveProperty('cooldownUntil');
    // pushed the waiting task at once, not when the rest would have ended
    const msg = await pushed;
    expect(msg.task.id).toBe(id);
    const events = (await readTransitions(fixture.redis.url, prefix)).filter(
      (event) => event.agent === agent.agentId,
    );
    const undrain = events.find((event) => event.reason === 'undrain');
    expect(undrain).toMatchObject({ from: 'cooldown', to: 'idle' });
    const assign = events.filter((event) => event.to === 'assigned').at(-1);
    expect(assign?.at).toBeLessThan(resting.cooldownUntil ?? 0);
    expect(
      events.some((event) => event.reason === 'cooldown_over' && event.at >= (undrain?.at ?? 0)),
    ).toBe(false);
    const record = await hub.agents.get(agent.agentId);
    expect(record).toMatchObject({ state: 'assigned', taskId: id, missedAcks: 0 });
    expect(record?.cooldownUntil).toBeUndefined();
    expect(await hub.redis.command.zscore(hub.keys.cooldowns, agent.agentId)).toBeNull();
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    expect(await agent.complete(msg, 'ok')).toEqual({ ok: true });
  });

  test("keeps the rest and the streak at the agent's own agent:resume (it cannot vouch for itself)", async () => {
    const { hub, agent, resting } = await silentUntil(2);
    // a drain of its own, then its own resume: the drain is lifted, the rest stays
    expect(await agent.send('agent:drain', {})).toEqual({ ok: true, state: 'cooldown' });
    expect((await hub.agents.get(agent.agentId))?.drainRequested).toBe(true);
    expect(await agent.send('agent:resume', {})).toEqual({ ok: true, state: 'cooldown' });
    // and without a drain to lift: nothing changes at all
    const before = await hub.agents.get(agent.agentId);
    expect(await agent.send('agent:resume', {})).toEqual({ ok: true, state: 'cooldown' });
    const record = await hub.agents.get(agent.agentId);
    expect(record).toMatchObject({
      state: 'cooldown',
      missedAcks: 2,
      cooldownUntil: resting.cooldownUntil,
      drainRequested: false,
    });
    expect(record?.version).toBe(before?.version);
    expect(await hub.redis.command.zscore(hub.keys.cooldowns, agent.agentId)).not.toBeNull();
    expect(await getAgent(hub.url, agent.agentId)).toMatchObject({ missedAcks: 2 });
  });

  test('leaves a cooldown the agent reported itself (a rate limit) to run out at a resume', async () => {
    const hub = await startHub({});
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(hub.url, queue);
    const pushed = agent.nextAssignment();
    const id = await createTask(hub.url, { queue, payload: {} });
    const msg = await pushed;
    const rateLimitedUntil = Date.now() + 60_000;
    expect(await agent.fail(msg, { error: 'quota', retryable: true, rateLimitedUntil })).toEqual({
      ok: true,
    });
    expect(await hub.agents.get(agent.agentId)).toMatchObject({
      state: 'cooldown',
      cooldownUntil: rateLimitedUntil,
      missedAcks: 0,
    });
    const resumed = await resume(hub.url, agent.agentId);
    expect(resumed).toMatchObject({ status: 200, body: { state: 'cooldown' } });
    expect(await hub.agents.get(agent.agentId)).toMatchObject({
      state: 'cooldown',
      cooldownUntil: rateLimitedUntil,
    });
    expect(await hub.redis.command.zscore(hub.keys.cooldowns, agent.agentId)).toBe(
      String(rateLimitedUntil),
    );
    expect(await getTask(hub.url, id)).toMatchObject({ state: 'waiting' });
  });

  test('ends the streak at a refusal: a task:fail sent before the accept', async () => {
    const { hub, agent, id } = await silentUntil(1);
    // the rest over (one ack timeout), the task is pushed again: the agent refuses it
    const msg = await agent.nextAssignment(5 * ACK_TIMEOUT_MS);
    expect(msg.task.id).toBe(id);
    expect((await hub.agents.get(agent.agentId))?.missedAcks).toBe(1);
    expect(await agent.fail(msg, { error: 'cannot run it here', retryable: false })).toEqual({
      ok: true,
    });
    expect(await hub.agents.get(agent.agentId)).toMatchObject({ state: 'idle', missedAcks: 0 });
    expect(await getAgent(hub.url, agent.agentId)).not.toHaveProperty('missedAcks');
    expect(await getTask(hub.url, id)).toMatchObject({ state: 'failed' });
  });

  test('ends the streak at a reconnect that resumes the pushed task', async () => {
    const { hub, agent, id } = await silentUntil(1);
    // the rest over (one ack timeout), the task is pushed again
    const msg = await agent.nextAssignment(5 * ACK_TIMEOUT_MS);
    expect(msg.task.id).toBe(id);
    // the push arrived, the accept did not go out: the sidecar announces the task on its reconnect
    agent.current = { taskId: id, token: msg.token, state: 'assigned' };
    const { again, record } = await reconnectRecorded(hub, agent);
    expect(record).toMatchObject({ state: 'working', taskId: id, missedAcks: 0 });
    expect(await getAgent(hub.url, agent.agentId)).not.toHaveProperty('missedAcks');
    expect(await again.complete(msg, 'ok')).toEqual({ ok: true });
  });
});

/**
 * An accept that comes after the task's lock ran out: no sweep ended the assignment in time (a
 * sweep runs every SWEEP_MS, up to a minute, and a replica may pause), so BullMQ's stalled checker
 * put the job back and another agent was handed it. The late accept must not start a second run.
 */
describe('an accept that comes after the lock of its task ran out', () => {
  const fixture = useHubsFixture();
  const { hubs, agents } = fixture;
  // the sweeps (and with them the ack timeouts) run once, at start: the lock runs out first
  const env = {
    LEASE_MS: '1500',
    ACK_TIMEOUT_MS: '1000',
    STALLED_INTERVAL_MS: '200',
    SWEEP_MS: '60000',
  };

  it('is refused once the stalled task went to another agent: one run, not two', async () => {
    const prefix = `k${randomBytes(3).toString('hex')}`;
    const hubA = await startTestHub(fixture.redis.url, { ...env, AGENTCOM_PREFIX: prefix });
    hubs.push(hubA);
    const hubB = await startTestHub(fixture.redis.url, { ...env, AGENTCOM_PREFIX: prefix });
    hubs.push(hubB);
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const late = await TestAgent.register(hubA.url, `late-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(late);
    const pushed = late.nextAssignment();
    const created = await api<{ id: string }>(hubA.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
    });
    const msg = await pushed;
    expect(msg.task.id).toBe(created.body.id);

    const other = await TestAgent.register(hubB.url, `other-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(other);
    // the lease runs out, the stalled checker puts the job back, a dispatch step hands it over
    const rescued = await other.nextAssignment(15_000);
    expect(rescued.task.id).toBe(msg.task.id);

    expect(await late.accept(msg)).toMatchObject({ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' });
    expect(await other.accept(rescued)).toMatchObject({ ok: true, state: 'working' });
    expect(await other.complete(rescued, 'once')).toEqual({ ok: true });
    expect((await api<TaskView>(hubA.url, 'GET', `/v1/tasks/${msg.task.id}`)).body).toMatchObject({
      state: 'completed',
      agentId: other.agentId,
    });
  });

  it('leases the task for a whole lease from the accept, not from the push', async () => {
    const hub = await startTestHub(fixture.redis.url, env);
    hubs.push(hub);
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    const pushed = agent.nextAssignment();
    await api(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    const msg = await pushed;
    const admin = new Redis(fixture.redis.url);
    try {
      const lock = hub.keys.bullLock(queue, msg.task.id);
      // accepted late, within the ack timeout: less than half of the push's lock is left
      await eventually(async () => ((await admin.pttl(lock)) < 700 ? true : undefined), {
        what: 'the lock past half its lease',
      });
      expect(await agent.accept(msg)).toMatchObject({ ok: true, state: 'working' });
      // the lease keeper's first extension may come a heartbeat later: the accept itself renews it
      expect(await admin.pttl(lock)).toBeGreaterThan(1000);
      expect(await admin.get(lock)).toBe(msg.token);
    } finally {
      admin.disconnect();
    }
  });
});

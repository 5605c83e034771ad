import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Hub } from '../../hub/src/hub';
import type { UiTransition } from '../../hub/src/ui/ui-events';
import { registerFreshAgent } from '../helpers/fresh-agent';
import { api, eventually, startTestHub } from '../helpers/hub';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { readTransitions } from '../helpers/invariants';
import { ROOT, startHubProcess, type HubProcess } from '../helpers/processes';

/** Preloaded into a hub process to skew its clock (`CLOCK_SKEW_MS`). */
const SKEWED_CLOCK = join(ROOT, 'test', 'fixtures', 'skewed-clock.cjs');

/**
 * Whole replicas whose machines' clocks are 20 s off, against one that is on time: a deadline or
 * a rest one replica writes ends when it should by every other replica's sweep. Times are taken
 * from the events stream's ids, which Redis stamps with its own clock.
 */
describe('replicas whose clocks disagree', () => {
  const fixture = useHubsFixture();
  /** Margin for the clocks' measured offsets and the rounding of the stored times (ms). */
  const EARLY_MS = 100;
  /** How late a sweep may act on a loaded machine (ms): `SWEEP_MS` here is 200. */
  const LATE_MS = 3000;

  const startReplica = async (
    prefix: string,
    hubId: string,
    skewMs: number,
    env: Record<string, string> = {},
  ) => {
    const hub = await startTestHub(
      fixture.redis.url,
      { AGENTCOM_PREFIX: prefix, HUB_ID: hubId, ...env },
      { now: () => Date.now() + skewMs },
    );
    fixture.hubs.push(hub);
    return hub;
  };
  /** Hub processes run as on a machine whose clock is off: closed after each test. */
  const processes: HubProcess[] = [];
  afterEach(async () => {
    await Promise.all(processes.splice(0).map((hub) => hub.kill()));
  });
  /**
   * A replica in a process of its own whose every clock reading (`Date.now()`: BullMQ's job
   * stamps too, not only its RedisClock's) is `skewMs` off, as on another machine.
   */
  const startSkewedProcess = async (prefix: string, hubId: string, skewMs: number) => {
    const hub = await startHubProcess(fixture.redis.url, prefix, hubId, {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${SKEWED_CLOCK}`.trim(),
      CLOCK_SKEW_MS: String(skewMs),
    });
    processes.push(hub);
    return hub;
  };
  const register = (hubUrl: string, queue: string) =>
    registerFreshAgent(fixture.agents, hubUrl, queue);
  const createTask = async (hubUrl: string, body: object) => {
    const created = await api<{ id: string }>(hubUrl, 'POST', '/v1/tasks', body);
    expect(created.status).toBe(201);
    return created.body.id;
  };
  /**
   * A replica on a machine whose clock is `skewMs` off and one on Redis's time, sharing a fresh
   * prefix, and a fresh queue for the test.
   */
  const startSkewedPair = async (skewMs: number) => {
    const prefix = `c${randomBytes(3).toString('hex')}`;
    const skewed = await startSkewedProcess(prefix, 'skewed', skewMs);
    const other = await startReplica(prefix, 'other', 0);
    return { prefix, skewed, other, queue: `q-${randomBytes(4).toString('hex')}` };
  };
  /** The agent's first transition for `reason`, if recorded. */
  const firstOf = async (prefix: string, agentId: string, reason: string) =>
    (await readTransitions(fixture.redis.url, prefix)).find(
      (event) => event.agent === agentId && event.reason === reason,
    );
  /** The agent's first transition for `reason`, once recorded. */
  const transition = (prefix: string, agentId: string, reason: string, timeoutMs: number) =>
    eventually(() => firstOf(prefix, agentId, reason), {
      what: `a ${reason} transition`,
      timeoutMs,
    });
  /** When Redis recorded the event (ms by Redis's clock: the stream id). */
  const redisMs = (event: UiTransition) => Number(event.id.split('-')[0]);
  /** Redis's time now (ms), asked of it. */
  const redisNow = async (hub: Hub) => {
    const [seconds, micros] = await hub.redis.command.time();
    return Number(seconds) * 1000 + Number(micros) / 1000;
  };

  it.each([
    ['behind', -20_000],
    ['ahead', 20_000],
  ])(
    'an agent assigned by a replica whose clock is 20 s %s is timed out for its ack on time by another',
    async (_, skewMs) => {
      // 20 times shorter than the skew: a deadline stamped by the skewed clock is off by far more
      const ackTimeoutMs = 1000;
      const env = { ACK_TIMEOUT_MS: String(ackTimeoutMs) };
      const prefix = `c${randomBytes(3).toString('hex')}`;
      // the skewed replica assigns (it sweeps only once, at its start); the other one sweeps and
      // does not dispatch
      const skewed = await startReplica(prefix, 'skewed', skewMs, { ...env, SWEEP_MS: '60000' });
      const other = await startReplica(prefix, 'other', 0, env);
      await other.dispatcher.stop();
      const queue = `q-${randomBytes(4).toString('hex')}`;
      const agent = await register(skewed.url, queue);
      const assigned = agent.nextAssignment();
      const taskId = await createTask(skewed.url, { queue, payload: {} });
      expect((await assigned).task.id).toBe(taskId);

      // never accepted
      const timedOut = await transition(
        prefix,
        agent.agentId,
        'ack_timeout',
        ackTimeoutMs + LATE_MS + 2000,
      );
      const assign = await firstOf(prefix, agent.agentId, 'assign');
      expect(assign).toMatchObject({ hub: 'skewed', task: taskId });
      expect(timedOut).toMatchObject({ hub: 'other', task: taskId, from: 'assigned' });
      const waitedMs = redisMs(timedOut) - redisMs(assign!);
      expect(waitedMs).toBeGreaterThanOrEqual(ackTimeoutMs - EARLY_MS);
      expect(waitedMs).toBeLessThanOrEqual(ackTimeoutMs + LATE_MS);
    },
  );

  it.each([
    ['behind', -20_000],
    ['ahead', 20_000],
  ])(
    "a task started on a replica whose clock is 20 s %s times out on time by another's sweep",
    async (_, skewMs) => {
      // 20 times shorter than the skew: a start stamped by the skewed clock is off by far more
      const taskTimeoutMs = 1000;
      const prefix = `c${randomBytes(3).toString('hex')}`;
      // a lease well past the run timeout: the test agent sends no heartbeats
      const env = { LEASE_MS: '15000' };
      const skewed = await startReplica(prefix, 'skewed', skewMs, { ...env, SWEEP_MS: '60000' });
      await startReplica(prefix, 'other', 0, env);
      const queue = `q-${randomBytes(4).toString('hex')}`;
      const agent = await register(skewed.url, queue);
      const assigned = agent.nextAssignment();
      const taskId = await createTask(skewed.url, { queue, payload: {}, timeoutMs: taskTimeoutMs });
      const msg = await assigned;
      expect(msg.task.id).toBe(taskId);
      expect(await agent.accept(msg)).toMatchObject({ ok: true });

      const timedOut = await transition(
        prefix,
        agent.agentId,
        'timeout',
        taskTimeoutMs + LATE_MS + 2000,
      );
      const accepted = await firstOf(prefix, agent.agentId, 'accept');
      expect(accepted).toMatchObject({ hub: 'skewed', task: taskId });
      expect(timedOut).toMatchObject({ hub: 'other', task: taskId, from: 'working' });
      const ranMs = redisMs(timedOut) - redisMs(accepted!);
      expect(ranMs).toBeGreaterThanOrEqual(taskTimeoutMs - EARLY_MS);
      expect(ranMs).toBeLessThanOrEqual(taskTimeoutMs + LATE_MS);
      await eventually(
        () => (agent.cancels.some((c) => c.reason === 'timeout') ? true : undefined),
        { what: 'the agent told its task timed out' },
      );
    },
  );

  it.each([
    ['behind', -20_000],
    ['ahead', 20_000],
  ])(
    'a rest begun by a replica whose clock is 20 s %s ends on time by another',
    async (_, skewMs) => {
      // the first rest after an ack timeout lasts one ack timeout: long enough for the skewed
      // replica to stop and another to start sweeping before it ends (that takes about 50 ms)
      const ackTimeoutMs = 2000;
      const env = { ACK_TIMEOUT_MS: String(ackTimeoutMs), LEASE_MS: '15000' };
      const prefix = `c${randomBytes(3).toString('hex')}`;
      // `host` holds the agent's connection and neither dispatches nor sweeps; the skewed replica
      // assigns, times the ack out and begins the rest, then stops; `late` ends the rest
      const host = await startReplica(prefix, 'host', 0, { ...env, SWEEP_MS: '60000' });
      await host.dispatcher.stop();
      const skewed = await startReplica(prefix, 'skewed', skewMs, env);
      const queue = `q-${randomBytes(4).toString('hex')}`;
      const agent = await register(host.url, queue);
      const assigned = agent.nextAssignment();
      const taskId = await createTask(skewed.url, { queue, payload: {} });
      expect((await assigned).task.id).toBe(taskId);

      const timedOut = await transition(
        prefix,
        agent.agentId,
        'ack_timeout',
        ackTimeoutMs + LATE_MS + 2000,
      );
      expect(timedOut).toMatchObject({ hub: 'skewed', to: 'cooldown' });
      await skewed.close();
      await startReplica(prefix, 'late', 0, env);

      const rested = await transition(
        prefix,
        agent.agentId,
        'cooldown_over',
        ackTimeoutMs + LATE_MS + 2000,
      );
      expect(rested).toMatchObject({ hub: 'late', from: 'cooldown', to: 'idle' });
      const restMs = redisMs(rested) - redisMs(timedOut);
      expect(restMs).toBeGreaterThanOrEqual(ackTimeoutMs - EARLY_MS);
      expect(restMs).toBeLessThanOrEqual(ackTimeoutMs + LATE_MS);
    },
  );

  it.each([
    ['behind', -20_000],
    ['ahead', 20_000],
  ])(
    'a delayed task added by a replica on a machine whose clock is 20 s %s starts after its delay',
    async (_, skewMs) => {
      const delayMs = 2500;
      // the skewed replica adds the task; the agent is connected to the other one
      const { prefix, skewed, other, queue } = await startSkewedPair(skewMs);
      const agent = await register(other.url, queue);
      const assigned = agent.nextAssignment();
      const before = await redisNow(other);
      const taskId = await createTask(skewed.url, { queue, payload: {}, delayMs });
      const after = await redisNow(other);
      // stamped on Redis's clock, as every time replicas compare (its delay counts from it)
      const view = await api<{ state: string; createdAt: number }>(
        other.url,
        'GET',
        `/v1/tasks/${taskId}`,
      );
      expect(view.body.state).toBe('delayed');
      expect(view.body.createdAt).toBeGreaterThanOrEqual(before - EARLY_MS);
      expect(view.body.createdAt).toBeLessThanOrEqual(after + EARLY_MS);

      const assign = await transition(prefix, agent.agentId, 'assign', delayMs + LATE_MS + 2000);
      expect(assign).toMatchObject({ task: taskId });
      expect((await assigned).task.id).toBe(taskId);
      // the task was stamped between `before` and `after`
      expect(redisMs(assign) - before).toBeGreaterThanOrEqual(delayMs - EARLY_MS);
      expect(redisMs(assign) - after).toBeLessThanOrEqual(delayMs + LATE_MS);
    },
  );

  it.each([
    ['behind', -20_000],
    ['ahead', 20_000],
  ])(
    'a rate limit reported as a duration to a replica on a machine whose clock is 20 s %s rests the agent that long',
    async (_, skewMs) => {
      const retryAfterMs = 3000;
      // the skewed replica takes the report; the other one reads the agent's record
      const { prefix, skewed, other, queue } = await startSkewedPair(skewMs);
      const agent = await register(skewed.url, queue);
      const assigned = agent.nextAssignment();
      await createTask(skewed.url, { queue, payload: {} });
      const msg = await assigned;
      expect(await agent.accept(msg)).toMatchObject({ ok: true });

      const before = await redisNow(other);
      expect(await agent.fail(msg, { error: 'quota', retryable: true, retryAfterMs })).toEqual({
        ok: true,
      });
      const after = await redisNow(other);
      const record = await other.agents.get(agent.agentId);
      expect(record?.state).toBe('cooldown');
      // that long from when the hub took the report, on Redis's clock
      expect(record?.cooldownUntil).toBeGreaterThanOrEqual(before + retryAfterMs - EARLY_MS);
      expect(record?.cooldownUntil).toBeLessThanOrEqual(after + retryAfterMs + EARLY_MS);

      const rested = await transition(
        prefix,
        agent.agentId,
        'cooldown_over',
        retryAfterMs + LATE_MS + 2000,
      );
      expect(rested).toMatchObject({ from: 'cooldown', to: 'idle' });
      expect(redisMs(rested) - before).toBeGreaterThanOrEqual(retryAfterMs - EARLY_MS);
      expect(redisMs(rested) - after).toBeLessThanOrEqual(retryAfterMs + LATE_MS);
    },
  );
});

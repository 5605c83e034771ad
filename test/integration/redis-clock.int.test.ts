import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Hub, HubOptions } from '../../hub/src/hub';
import { RedisClock } from '../../hub/src/redis/redis-clock';
import type { UiTransition } from '../../hub/src/ui/ui-events';
import { registerFreshAgent } from '../helpers/fresh-agent';
import { api, eventually, startTestHub } from '../helpers/hub';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { readTransitions } from '../helpers/invariants';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** Redis's time (ms), asked of it. */
const redisTimeOf = async (redis: Redis): Promise<number> => {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Number(micros) / 1000;
};

/** Redis stops answering every client for `ms` (a stall: a fork, a slow script, a freeze). */
const stall = (admin: Redis, ms: number) => admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');

/** Redis's clock read locally, against a real Redis, on a machine clock the test skews. */
describe('RedisClock', () => {
  let server: RedisProcess;
  let redis: Redis;
  /** A connection of the test's own, for the stalls. */
  let admin: Redis;
  /** What the test adds to this machine's clock. */
  let skewMs = 0;
  const localNow = (): number => Date.now() + skewMs;
  /** How far `clock.now()` is from Redis's clock, at most (ms): read between two TIMEs. */
  const errorOf = async (clock: RedisClock): Promise<number> => {
    const before = await redisTimeOf(redis);
    const now = clock.now();
    const after = await redisTimeOf(redis);
    return Math.max(before - now, now - after, 0);
  };

  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
    admin = new Redis(server.url);
  });
  afterAll(async () => {
    redis.disconnect();
    admin.disconnect();
    await server.dispose();
  });
  beforeEach(() => {
    skewMs = 0;
  });

  it("answers Redis's time on a machine whose clock is 20 s off, once measured", async () => {
    skewMs = 20_000;
    const clock = new RedisClock({ redis, localNow });
    expect(clock.measured).toBe(false);
    expect(Math.abs(clock.now() - localNow())).toBeLessThan(50); // the local clock until then

    const offset = await clock.measure();

    expect(clock.measured).toBe(true);
    expect(Math.abs(offset + 20_000)).toBeLessThan(100);
    expect(await errorOf(clock)).toBeLessThan(100);
    // whole milliseconds, as Date.now(): a fractional time refused as a PX argument, and a job's
    // stamp read back from BullMQ differed from the one pushed
    expect(Number.isInteger(clock.now())).toBe(true);
  });

  it.each([800, 1500])(
    'a measurement that a Redis stall of %i ms slowed does not move the clock',
    async (stallMs) => {
      const clock = new RedisClock({ redis, localNow });
      await clock.measure();
      expect(await errorOf(clock)).toBeLessThan(50);

      // TIME is answered at the stall's end: taken as read halfway through, it is half the
      // stall late (the clock a stall under a second set ran that much ahead)
      await stall(admin, stallMs);
      await clock.measure();

      expect(await errorOf(clock)).toBeLessThan(50);
    },
  );

  it('measures again at its start when Redis stalls then, until it is answered at once', async () => {
    await stall(admin, 1500);
    const clock = new RedisClock({ redis, localNow });
    await clock.measure();

    expect(clock.measured).toBe(true);
    expect(await errorOf(clock)).toBeLessThan(50);
  });

  it.each([
    ['ahead', 60_000],
    ['back', -60_000],
  ])("a step of the machine's clock %s does not move it", async (_, stepMs) => {
    const clock = new RedisClock({ redis, localNow });
    await clock.measure();

    skewMs += stepMs; // NTP stepping it, an operator setting it

    expect(await errorOf(clock)).toBeLessThan(50);
    // the offset to the machine's clock follows at the next measurement, Redis's time stays
    expect(Math.abs((await clock.measure()) + stepMs)).toBeLessThan(100);
    expect(await errorOf(clock)).toBeLessThan(50);
  });

  it('a machine that slept (its monotonic clock stopped meanwhile) is measured again at once', async () => {
    let sleptMs = 0;
    const clock = new RedisClock({
      redis,
      localNow,
      monotonicNow: () => performance.now() - sleptMs,
    });
    await clock.measure();
    expect(clock.suspect).toBe(false);

    sleptMs = 60_000; // the machine's clock went on, the monotonic one did not

    // behind until measured again: suspect (the sweep measures first), measured at once
    expect(clock.suspect).toBe(true);
    await clock.measure();
    expect(clock.suspect).toBe(false);
    expect(await errorOf(clock)).toBeLessThan(50);
  });
});

/** The clock of whole replicas whose machine's clock steps, or whose Redis stalls as they start. */
describe("a replica's Redis clock", () => {
  const fixture = useHubsFixture();
  let admin: Redis;
  beforeAll(() => {
    admin = new Redis(fixture.redis.url);
  });
  afterAll(() => {
    admin.disconnect();
  });

  const startReplica = async (
    prefix: string,
    hubId: string,
    env: Record<string, string>,
    options: HubOptions = {},
  ) => {
    const hub = await startTestHub(
      fixture.redis.url,
      { AGENTCOM_PREFIX: prefix, HUB_ID: hubId, ...env },
      options,
    );
    fixture.hubs.push(hub);
    return hub;
  };
  const register = (hubUrl: string, queue: string) =>
    registerFreshAgent(fixture.agents, hubUrl, queue);
  const transitionsOf = async (prefix: string, agentId: string, reason: string) =>
    (await readTransitions(fixture.redis.url, prefix)).filter(
      (event) => event.agent === agentId && event.reason === reason,
    );
  /** The agent's first transition for `reason`, once recorded. */
  const transition = (prefix: string, agentId: string, reason: string, timeoutMs: number) =>
    eventually(async () => (await transitionsOf(prefix, agentId, reason))[0], {
      what: `a ${reason} transition`,
      timeoutMs,
    });
  /** When Redis recorded the event (ms by Redis's clock: the stream id). */
  const redisMs = (event: UiTransition) => Number(event.id.split('-')[0]);
  /**
   * Resolves once `hub` ran a whole sweep begun after this call: an entry for an agent that does
   * not exist, listed as due in the cooldowns, is dropped by a sweep (`endedCooldowns`); the
   * second one by a sweep begun after the first was dropped, once the sweep before had ended.
   */
  const wholeSweep = async (hub: Hub) => {
    for (const n of [1, 2]) {
      const ghost = `ghost-${n}-${randomBytes(4).toString('hex')}`;
      await admin.zadd(hub.keys.cooldowns, 1, ghost);
      await eventually(
        async () => ((await admin.zscore(hub.keys.cooldowns, ghost)) === null ? true : undefined),
        { what: `a sweep dropping ${ghost}` },
      );
    }
  };

  it.each([
    ['ahead', 60_000],
    ['back', -60_000],
  ])(
    "a replica whose machine's clock steps 60 s %s times another's acks out on time and takes it for alive",
    async (_, stepMs) => {
      const ackTimeoutMs = 2000;
      /** Margins as in clock-skew.int (ms). */
      const EARLY_MS = 100;
      const LATE_MS = 3000;
      // three heartbeats (45 s) make a replica gone: less than the step; a replica refreshes its
      // liveness, and measures Redis's clock again, every 7.5 s only
      const env = {
        HEARTBEAT_MS: '15000',
        LEASE_MS: '40000',
        ACK_TIMEOUT_MS: String(ackTimeoutMs),
      };
      const prefix = `s${randomBytes(3).toString('hex')}`;
      // `host` holds the agent and assigns; it sweeps once, at its start. `stepped` sweeps.
      const host = await startReplica(prefix, 'host', { ...env, SWEEP_MS: '60000' });
      let machineSkewMs = 0;
      const stepped = await startReplica(prefix, 'stepped', env, {
        now: () => Date.now() + machineSkewMs,
      });
      await stepped.dispatcher.stop();
      const queue = `q-${randomBytes(4).toString('hex')}`;
      const agent = await register(host.url, queue);
      const assigned = agent.nextAssignment();
      const created = await api<{ id: string }>(host.url, 'POST', '/v1/tasks', {
        queue,
        payload: {},
      });
      expect(created.status).toBe(201);
      expect((await assigned).task.id).toBe(created.body.id);

      machineSkewMs += stepMs; // NTP stepping it, an operator setting it

      // never accepted: timed out by `stepped`, one ack timeout after the assignment
      const timedOut = await transition(
        prefix,
        agent.agentId,
        'ack_timeout',
        ackTimeoutMs + LATE_MS + 2000,
      );
      const [assign] = await transitionsOf(prefix, agent.agentId, 'assign');
      expect(assign).toMatchObject({ hub: 'host', task: created.body.id });
      expect(timedOut).toMatchObject({ hub: 'stepped', from: 'assigned', to: 'cooldown' });
      const waitedMs = redisMs(timedOut) - redisMs(assign!);
      expect(waitedMs).toBeGreaterThanOrEqual(ackTimeoutMs - EARLY_MS);
      expect(waitedMs).toBeLessThanOrEqual(ackTimeoutMs + LATE_MS);
      // and `host`, which refreshes its liveness, is not gone by `stepped`'s sweeps
      await wholeSweep(stepped);
      expect(await transitionsOf(prefix, agent.agentId, 'replica_gone')).toEqual([]);
      expect(await stepped.agents.get(agent.agentId)).toMatchObject({ hubId: 'host' });
      expect((await stepped.agents.get(agent.agentId))?.disconnectedAt).toBeUndefined();
    },
  );

  it('a replica started while Redis stalls takes no other replica for gone at its first sweep', async () => {
    // three heartbeats (600 ms) make a replica gone: well under half the stall
    const env = { HEARTBEAT_MS: '200' };
    const prefix = `s${randomBytes(3).toString('hex')}`;
    const host = await startReplica(prefix, 'host', { ...env, SWEEP_MS: '60000' });
    const agent = await register(host.url, `q-${randomBytes(4).toString('hex')}`);

    // the replica's first measurement of Redis's clock waits for the stall's end
    await stall(admin, 3000);
    const late = await startReplica(prefix, 'late', env);

    await wholeSweep(late);
    expect(await transitionsOf(prefix, agent.agentId, 'replica_gone')).toEqual([]);
    const record = await late.agents.get(agent.agentId);
    expect(record).toMatchObject({ hubId: 'host', state: 'idle' });
    expect(record?.disconnectedAt).toBeUndefined();
  });
});

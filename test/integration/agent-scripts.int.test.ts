import { Redis } from 'ioredis';
import { AgentStore, IllegalTransitionError } from '../../hub/src/fsm/agent-store';
import { RedisKeys } from '../../hub/src/redis/keys';
import { registerScripts } from '../../hub/src/redis/scripts';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

describe('agent Lua scripts against a real redis-server', () => {
  let server: RedisProcess;
  let redis: Redis;
  let keys: RedisKeys;
  let store: AgentStore;
  let clock = 1_000_000;
  let n = 0;

  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    await redis.quit();
    await server.dispose();
  });
  beforeEach(() => {
    keys = new RedisKeys(`s${++n}`);
    store = new AgentStore({
      redis,
      scripts: registerScripts(redis),
      keys,
      hubId: 'hub-a',
      now: () => clock,
    });
  });

  async function idleAgent(agentId: string, queues: string[], at: number): Promise<void> {
    await store.register(agentId, 'h'.repeat(64));
    clock = at;
    const result = await store.transition({
      agentId,
      from: 'offline',
      to: 'idle',
      reason: 'connect',
      set: { queues: queues.join(','), socketId: `s-${agentId}` },
      idleAdd: queues,
    });
    expect(result.ok).toBe(true);
  }

  describe('transition', () => {
    it('applies the patch, bumps the version, updates the indexes and logs the event', async () => {
      await idleAgent('a1', ['q1', 'q2'], 10);
      const record = await store.get('a1');
      expect(record).toMatchObject({
        state: 'idle',
        version: 1,
        queues: ['q1', 'q2'],
        socketId: 's-a1',
      });
      expect(await redis.zrange(keys.idle('q1'), '0', '-1')).toEqual(['a1']);
      expect(await redis.zscore(keys.idle('q2'), 'a1')).toBe('10');

      const drained = await store.transition({
        agentId: 'a1',
        from: 'idle',
        to: 'draining',
        version: 1,
        reason: 'drain',
        set: { drainRequested: 1 },
        idleRemove: ['q1', 'q2'],
      });
      expect(drained).toEqual({ ok: true, version: 2 });
      expect(await redis.zcard(keys.idle('q1'))).toBe(0);
      expect(await redis.zcard(keys.idle('q2'))).toBe(0);
      const events = await redis.xrange(keys.events, '-', '+');
      const last = Object.fromEntries(chunk(events.at(-1)?.[1] ?? []));
      expect(last).toMatchObject({
        agent: 'a1',
        from: 'idle',
        to: 'draining',
        reason: 'drain',
        hub: 'hub-a',
        version: '2',
      });
    });

    it('changes nothing when the expected state does not hold', async () => {
      await idleAgent('a2', ['q1'], 10);
      const eventsBefore = await redis.xlen(keys.events);
      const result = await store.transition({
        agentId: 'a2',
        from: 'working',
        to: 'idle',
        reason: 'complete',
        set: { x: 1 },
      });
      expect(result).toMatchObject({
        ok: false,
        reason: 'conflict',
        field: 'state',
        actual: 'idle',
        version: 1,
      });
      expect((await store.get('a2'))?.version).toBe(1);
      expect(await redis.hget(keys.agent('a2'), 'x')).toBeNull();
      expect(await redis.xlen(keys.events)).toBe(eventsBefore);
    });

    it('changes nothing when the expected version is stale', async () => {
      await idleAgent('a3', ['q1'], 10);
      const result = await store.transition({
        agentId: 'a3',
        from: 'idle',
        to: 'offline',
        version: 0,
        reason: 'disconnect',
        idleRemove: ['q1'],
      });
      expect(result).toMatchObject({ ok: false, field: 'version', actual: '1' });
      expect(await redis.zcard(keys.idle('q1'))).toBe(1);
    });

    it('checks extra fields such as the socket id', async () => {
      await idleAgent('a4', ['q1'], 10);
      const result = await store.transition({
        agentId: 'a4',
        from: 'idle',
        to: 'offline',
        reason: 'disconnect',
        expect: { socketId: 'someone-else' },
      });
      expect(result).toMatchObject({ ok: false, field: 'socketId', actual: 's-a4' });
    });

    it('reports a missing agent', async () => {
      expect(
        await store.transition({
          agentId: 'ghost',
          from: 'idle',
          to: 'offline',
          reason: 'disconnect',
        }),
      ).toEqual({
        ok: false,
        reason: 'missing',
      });
    });

    it('refuses an illegal transition before touching Redis', async () => {
      await idleAgent('a5', ['q1'], 10);
      await expect(
        store.transition({ agentId: 'a5', from: 'idle', to: 'working', reason: 'accept' }),
      ).rejects.toBeInstanceOf(IllegalTransitionError);
      expect((await store.get('a5'))?.state).toBe('idle');
    });
  });

  describe('claimIdle', () => {
    it('claims the longest-idle agent and takes it out of every idle index', async () => {
      await idleAgent('late', ['q1'], 300);
      await idleAgent('early', ['q1', 'q2'], 100);
      clock = 1000;
      const claim = await store.claimIdle('q1', 500);
      expect(claim).toEqual({ agentId: 'early', version: 2, queues: ['q1', 'q2'] });
      const record = await store.get('early');
      expect(record).toMatchObject({ state: 'assigned', assignedAt: 1000 });
      expect(await redis.zrange(keys.idle('q1'), '0', '-1')).toEqual(['late']);
      expect(await redis.zcard(keys.idle('q2'))).toBe(0);
      expect(await redis.zscore(keys.ackDeadlines, 'early')).toBe('1500');
    });

    it('skips and removes stale entries of agents that are no longer idle', async () => {
      await idleAgent('stale', ['q1'], 50);
      await idleAgent('fresh', ['q1'], 60);
      await redis.hset(keys.agent('stale'), 'state', 'working');
      const claim = await store.claimIdle('q1', 500);
      expect(claim?.agentId).toBe('fresh');
      expect(await redis.zcard(keys.idle('q1'))).toBe(0);
    });

    it('returns nothing when no agent is idle', async () => {
      expect(await store.claimIdle('empty', 500)).toBeUndefined();
    });

    it('never hands one agent to two concurrent claims', async () => {
      for (let i = 0; i < 10; i++) await idleAgent(`c${i}`, ['q1'], 100 + i);
      const claims = await Promise.all(
        Array.from({ length: 15 }, () => store.claimIdle('q1', 500)),
      );
      const claimed = claims.filter((c) => c !== undefined).map((c) => c.agentId);
      expect(claimed).toHaveLength(10);
      expect(new Set(claimed).size).toBe(10);
    });
  });
});

function chunk(flat: string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i] ?? '', flat[i + 1] ?? '']);
  return pairs;
}

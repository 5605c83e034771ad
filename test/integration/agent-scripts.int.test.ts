import { Job, Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { AgentStore, IllegalTransitionError } from '../../hub/src/fsm/agent-store';
import { jobToComplete, moveToCompletedArgs } from '../../hub/src/dispatch/bull-completion';
import { RedisKeys } from '../../hub/src/redis/keys';
import { agentScripts, luaScript } from '../../hub/src/redis/scripts';
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
      scripts: agentScripts(redis),
      keys,
      hubId: 'hub-a',
      now: () => clock,
    });
  });

  /** `hubId`: the replica holding the agent's socket (none recorded when omitted). */
  async function idleAgent(
    agentId: string,
    queues: string[],
    at: number,
    hubId?: string,
  ): Promise<void> {
    await store.register(agentId, 'h'.repeat(64));
    clock = at;
    const result = await store.transition({
      agentId,
      from: 'offline',
      to: 'idle',
      reason: 'connect',
      set: { queues: queues.join(','), socketId: `s-${agentId}`, ...(hubId ? { hubId } : {}) },
      idleAdd: queues,
    });
    expect(result.ok).toBe(true);
  }

  /** Agent `a` (queue q1, idle since `idleSince`) working on task t1 under token `a:tok`. */
  async function workingAgent(idleSince: number): Promise<void> {
    await idleAgent('a', ['q1'], idleSince);
    await store.transition({
      agentId: 'a',
      from: 'idle',
      to: 'assigned',
      reason: 'assign',
      set: { taskId: 't1', token: 'a:tok', taskQueue: 'q1' },
      idleRemove: ['q1'],
    });
    expect(await store.accept('a', 't1', 'a:tok')).toMatchObject({ replayed: false });
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

  describe('removeFromIndex', () => {
    it('drops an entry only while it is still due by the bound it was listed with', async () => {
      await redis.zadd(keys.cooldowns, 2000, 'a');
      expect(await store.dueIn('cooldowns', 1500)).toEqual([]);
      // listed as due by 1,500, then a new rest ending at 2,000 was recorded: it stays
      await store.removeFromIndex('cooldowns', 'a', 1500);
      expect(await redis.zscore(keys.cooldowns, 'a')).toBe('2000');
      await store.removeFromIndex('cooldowns', 'a', 2000);
      expect(await redis.zscore(keys.cooldowns, 'a')).toBeNull();
      await expect(store.removeFromIndex('cooldowns', 'a', 2000)).resolves.toBeUndefined();
    });
  });

  describe('claimIdle', () => {
    const queues: Queue[] = [];
    afterEach(async () => {
      await Promise.all(queues.splice(0).map((q) => q.close()));
    });
    /** A real BullMQ queue of this test's prefix. */
    function queue(name: string): Queue {
      const q = new Queue(name, { connection: redis, prefix: keys.bullPrefix });
      queues.push(q);
      return q;
    }

    it('claims the longest-idle agent, records the token and leaves every idle index', async () => {
      await idleAgent('late', ['q1'], 300);
      await idleAgent('early', ['q1', 'q2'], 100);
      await queue('q1').add('task', {});
      clock = 1000;
      const claim = await store.claimIdle('q1', 500);
      // idle since 100: where a claim that hands out nothing puts it back
      expect(claim).toMatchObject({
        agentId: 'early',
        version: 2,
        queues: ['q1', 'q2'],
        idleSince: 100,
      });
      expect(claim?.queue).toBe('q1');
      expect(claim?.token).toMatch(/^early:[0-9a-f-]{36}$/);
      const record = await store.get('early');
      expect(record).toMatchObject({
        state: 'assigned',
        assignedAt: 1000,
        token: claim?.token,
        taskQueue: 'q1',
      });
      expect(record?.taskId).toBeUndefined();
      expect(await redis.zrange(keys.idle('q1'), '0', '-1')).toEqual(['late']);
      expect(await redis.zcard(keys.idle('q2'))).toBe(0);
      expect(await redis.zscore(keys.ackDeadlines, 'early')).toBe('1500');
    });

    it('claims nobody while the queue has no runnable job', async () => {
      await idleAgent('a', ['q1'], 100);
      clock = Date.now();
      expect(await store.claimIdle('q1', 500)).toBeUndefined();
      await queue('q1').add('later', {}, { delay: 60_000 });
      expect(await store.claimIdle('q1', 500)).toBeUndefined();
      await queue('q1').pause();
      await queue('q1').add('now', {});
      expect(await store.claimIdle('q1', 500)).toBeUndefined();
      expect((await store.get('a'))?.state).toBe('idle');
      await queue('q1').resume();
      expect((await store.claimIdle('q1', 500))?.agentId).toBe('a');
    });

    it('counts a delayed job that is due as runnable', async () => {
      await idleAgent('a', ['q1'], 100);
      await queue('q1').add('soon', {}, { delay: 1000 });
      clock = Date.now();
      expect(await store.claimIdle('q1', 500)).toBeUndefined();
      clock = Date.now() + 5000;
      expect((await store.claimIdle('q1', 500))?.agentId).toBe('a');
    });

    it("fetches from the agent's first queue in its order that has a runnable job", async () => {
      await idleAgent('a', ['first', 'second', 'third'], 100);
      await queue('second').add('task', {});
      await queue('third').add('task', {});
      expect((await store.claimIdle('third', 500))?.queue).toBe('second');
    });

    it('skips and removes stale entries of agents that are no longer idle', async () => {
      await idleAgent('stale', ['q1'], 50);
      await idleAgent('fresh', ['q1'], 60);
      await queue('q1').add('task', {});
      await redis.hset(keys.agent('stale'), 'state', 'working');
      const claim = await store.claimIdle('q1', 500);
      expect(claim?.agentId).toBe('fresh');
      expect(await redis.zcard(keys.idle('q1'))).toBe(0);
    });

    it('returns nothing when no agent is idle', async () => {
      await queue('empty').add('task', {});
      expect(await store.claimIdle('empty', 500)).toBeUndefined();
    });

    it('never hands one agent to two concurrent claims', async () => {
      for (let i = 0; i < 10; i++) await idleAgent(`c${i}`, ['q1'], 100 + i);
      await queue('q1').add('task', {});
      const claims = await Promise.all(
        Array.from({ length: 15 }, () => store.claimIdle('q1', 500)),
      );
      const claimed = claims.filter((c) => c !== undefined).map((c) => c.agentId);
      expect(claimed).toHaveLength(10);
      expect(new Set(claimed).size).toBe(10);
      expect(new Set(claims.map((c) => c?.token)).size).toBe(11);
    });

    it('prefers an agent connected to its own replica among the 8 longest-idle', async () => {
      await idleAgent('remote1', ['q1'], 100, 'hub-b');
      await idleAgent('remote2', ['q1'], 200, 'hub-b');
      await idleAgent('local', ['q1'], 300, 'hub-a');
      await idleAgent('local2', ['q1'], 400, 'hub-a');
      await queue('q1').add('task', {});
      await queue('q1').add('task', {});
      await queue('q1').add('task', {});
      clock = 1000;
      expect((await store.claimIdle('q1', 500))?.agentId).toBe('local');
      expect((await store.claimIdle('q1', 500))?.agentId).toBe('local2');
      // no local agent left: the longest-idle one, wherever it is connected
      expect((await store.claimIdle('q1', 500))?.agentId).toBe('remote1');
    });

    it('takes the longest-idle agent when no local one is among the 8 longest-idle', async () => {
      for (let i = 0; i < 8; i++) await idleAgent(`remote${i}`, ['q1'], 100 + i, 'hub-b');
      await idleAgent('local', ['q1'], 200, 'hub-a');
      await queue('q1').add('task', {});
      clock = 1000;
      expect((await store.claimIdle('q1', 500))?.agentId).toBe('remote0');
    });

    it('finds the active job fetched with a claim token by its lock', async () => {
      await idleAgent('a', ['q1'], 100);
      const added = await queue('q1').add('task', {});
      const claim = await store.claimIdle('q1', 500);
      const connection = new Redis(server.url, { maxRetriesPerRequest: null });
      const worker = new Worker('q1', null, {
        connection,
        prefix: keys.bullPrefix,
        autorun: false,
      });
      try {
        const job = await worker.getNextJob(claim?.token ?? '', { block: false });
        expect(job?.id).toBe(added.id);
        expect(await store.jobLockedBy('q1', claim?.token ?? '')).toBe(added.id);
        expect(await store.jobLockedBy('q1', 'a:other')).toBeUndefined();
      } finally {
        await worker.close();
        await connection.quit();
      }
    });

    describe('claimAndFetch', () => {
      const step = () => store.claimAndFetch('q1', 500, 30_000);
      /** The newest entry of the events stream, as an object. */
      const lastEvent = async (): Promise<Record<string, string>> => {
        const [entry] = await redis.xrevrange(keys.events, '+', '-', 'COUNT', 1);
        return Object.fromEntries(chunk(entry?.[1] ?? []));
      };

      it('claims, fetches with the token as the lock and records the task, in one call', async () => {
        await idleAgent('a', ['q1'], 100);
        const added = await queue('q1').add('task', { payload: 1, timeoutMs: 90_000 });
        const id = added.id ?? '';
        clock = Date.now();
        const done = await step();
        // one transition (idle -> assigned, with the task) and one event for claim and assignment
        expect(done).toMatchObject({
          outcome: 'assigned',
          claim: { agentId: 'a', version: 2, queues: ['q1'], queue: 'q1', idleSince: 100 },
          job: { id },
        });
        if (done?.outcome !== 'assigned') throw new Error('not assigned');
        expect(JSON.parse(done.job.fields.data ?? '')).toEqual({ payload: 1, timeoutMs: 90_000 });
        expect(done.job.fields.ats).toBe('1');
        const token = done.claim.token;
        expect(await store.get('a')).toMatchObject({
          state: 'assigned',
          version: 2,
          taskId: id,
          token,
          taskQueue: 'q1',
          taskTimeoutMs: 90_000,
        });
        expect(await redis.get(keys.bullLock('q1', id))).toBe(token);
        expect(await queue('q1').getJobState(id)).toBe('active');
        expect(await redis.zscore(keys.ackDeadlines, 'a')).toBe(String(clock + 500));
        const events = await redis.xrange(keys.events, '-', '+');
        const last = Object.fromEntries(
          (events.at(-1)?.[1] ?? []).flatMap((v, i, a) => (i % 2 ? [] : [[v, a[i + 1]]])),
        );
        expect(events.map(([, f]) => f[f.indexOf('reason') + 1])).toEqual(['connect', 'assign']);
        expect(last).toMatchObject({
          agent: 'a',
          from: 'idle',
          to: 'assigned',
          reason: 'assign',
          task: id,
          version: '2',
          queue: 'q1',
        });
      });

      it("fetches the way BullMQ's Worker does: highest priority first, due delayed jobs promoted", async () => {
        await idleAgent('a', ['q1'], 100);
        await idleAgent('b', ['q1'], 200);
        await idleAgent('c', ['q1'], 300);
        const low = await queue('q1').add('low', {}, { priority: 5 });
        const high = await queue('q1').add('high', {}, { priority: 1 });
        const delayed = await queue('q1').add('delayed', {}, { delay: 1000 });
        clock = Date.now() + 5000;
        const ids = [];
        for (let i = 0; i < 3; i++) {
          const done = await step();
          ids.push(done?.outcome === 'assigned' ? done.job.id : done?.outcome);
        }
        expect(ids).toEqual([delayed.id, high.id, low.id]);
        expect(await step()).toBeUndefined();
      });

      it('says whether another step may assign: a runnable job and an idle agent both left', async () => {
        await idleAgent('a', ['q1'], 100);
        await idleAgent('b', ['q1'], 200);
        await idleAgent('c', ['q1'], 300);
        await queue('q1').add('one', {});
        await queue('q1').add('two', {});
        const delayed = await queue('q1').add('later', {}, { delay: 60_000 });
        clock = Date.now();
        const more = async () => {
          const done = await step();
          if (done?.outcome !== 'assigned') throw new Error(`not assigned: ${done?.outcome}`);
          return done.more;
        };
        expect(await more()).toBe(true); // 'two' waits, b and c idle
        expect(await more()).toBe(false); // only a delayed job, not due
        clock = Date.now() + 120_000;
        const last = await step();
        expect(last).toMatchObject({ outcome: 'assigned', job: { id: delayed.id }, more: false });
        await queue('q1').add('three', {});
        await idleAgent('d', ['q2'], 400);
        expect(await step()).toBeUndefined(); // nobody idle serves q1: no step assigns
      });

      it('leaves a job an operator asked to cancel to the caller, fetched but not recorded', async () => {
        await idleAgent('a', ['q1'], 100);
        const added = await queue('q1').add('task', {});
        await redis.set(keys.cancelRequested('q1', added.id ?? ''), 'stop');
        clock = Date.now();
        const done = await step();
        expect(done).toMatchObject({
          outcome: 'fetched',
          jobId: added.id,
          claim: { agentId: 'a' },
        });
        const record = await store.get('a');
        expect(record).toMatchObject({ state: 'assigned', token: done?.claim.token });
        expect(record?.taskId).toBeUndefined();
        expect(await redis.get(keys.bullLock('q1', added.id ?? ''))).toBe(done?.claim.token);
        // no task recorded, so the claim is logged alone (no 'assign' with this task)
        expect(await lastEvent()).toMatchObject({
          agent: 'a',
          from: 'idle',
          to: 'assigned',
          reason: 'claim',
          version: '2',
        });
        expect((await lastEvent()).task ?? '').toBe('');
      });

      it('leaves the agent claimed when BullMQ hands out nothing (a maxed queue): the caller frees it', async () => {
        await idleAgent('a', ['q1'], 100);
        await idleAgent('b', ['q1'], 200);
        await queue('q1').setGlobalConcurrency(1);
        await queue('q1').add('first', {});
        await queue('q1').add('second', {});
        clock = Date.now();
        expect((await step())?.outcome).toBe('assigned'); // a: the one job the queue may run
        const done = await step();
        expect(done).toMatchObject({ outcome: 'claimed', claim: { agentId: 'b', queue: 'q1' } });
        expect(await store.get('b')).toMatchObject({ state: 'assigned', token: done?.claim.token });
        expect(await lastEvent()).toMatchObject({ agent: 'b', to: 'assigned', reason: 'claim' });
        expect(await queue('q1').getWaitingCount()).toBe(1);
      });

      it('claims nobody and fetches nothing without a runnable job', async () => {
        await idleAgent('a', ['q1'], 100);
        clock = Date.now();
        expect(await step()).toBeUndefined();
        expect((await store.get('a'))?.state).toBe('idle');
      });
    });

    describe('completeAtOnce', () => {
      /** `a` works on a job of q1 that claimAndFetch handed it, accepted. */
      async function working(): Promise<{ id: string; token: string }> {
        await idleAgent('a', ['q1'], 100);
        const added = await queue('q1').add('task', {}, { attempts: 1 });
        clock = Date.now();
        const step = await store.claimAndFetch('q1', 500, 30_000);
        const id = added.id ?? '';
        const token = step?.claim.token ?? '';
        expect(await store.accept('a', id, token)).toMatchObject({ replayed: false });
        return { id, token };
      }
      const complete = (
        id: string,
        token: string,
        agentToken = token,
        removeOnComplete: number | { count: number; age: number } = 100,
      ) =>
        store.completeAtOnce({
          taskId: id,
          token: agentToken,
          bull: moveToCompletedArgs(
            jobToComplete(queue('q1'), id, removeOnComplete),
            { ok: 1 },
            token,
          ),
          release: {
            agentId: 'a',
            from: 'working',
            to: 'idle',
            reason: 'complete',
            task: id,
            expect: {
              taskId: id,
              token: agentToken,
              drainRequested: '',
              cooldownUntil: '',
              disconnectedAt: '',
            },
            del: ['taskId', 'token', 'taskQueue', 'startedAt'],
            incr: { tasksDone: 1 },
            idleAddOwn: true,
            always: {
              set: [{ key: keys.finished(id), value: `completed ${agentToken}`, ttlMs: 60_000 }],
            },
          },
          claimQueue: 'q1',
          ackTimeoutMs: 500,
          lockMs: 30_000,
        });

      it('completes the job, frees the agent and hands it the next task, in one call', async () => {
        const { id, token } = await working();
        const next = await queue('q1').add('next', {});
        const done = await complete(id, token);
        expect(done).toMatchObject({
          status: 'completed',
          queues: ['q1'],
          result: { ok: true },
          step: { outcome: 'assigned', claim: { agentId: 'a' }, job: { id: next.id } },
        });
        const job = await queue('q1').getJob(id);
        expect(await job?.getState()).toBe('completed');
        expect(job?.returnvalue).toEqual({ ok: 1 });
        expect(await redis.get(keys.finished(id))).toBe(`completed ${token}`);
        expect(await store.get('a')).toMatchObject({
          state: 'assigned',
          taskId: next.id,
          tasksDone: 1,
        });
      });

      it("passes BullMQ's packed options through: the retention of completed jobs holds", async () => {
        const { id, token } = await working();
        expect(await complete(id, token, token, { count: 0, age: 3600 })).toMatchObject({
          status: 'completed',
        });
        expect(await queue('q1').getJob(id)).toBeUndefined(); // kept: none
      });

      it('frees the agent to idle when no job waits', async () => {
        const { id, token } = await working();
        expect(await complete(id, token)).toMatchObject({ status: 'completed', step: undefined });
        expect((await store.get('a'))?.state).toBe('idle');
        expect(await redis.zrange(keys.idle('q1'), '0', '-1')).toEqual(['a']);
      });

      it.each([
        ['another report of the task holds its lock', 'lock'],
        ['a report of the task was applied', 'finished'],
        ['the agent does not hold the task under the token', 'token'],
        ["BullMQ's lock of the job is another's", 'bull-lock'],
      ])('changes nothing when %s: the caller goes step by step', async (_, kind) => {
        const { id, token } = await working();
        if (kind === 'lock') await redis.set(keys.reporting(id), 'other');
        if (kind === 'finished') await redis.set(keys.finished(id), 'completed a:old');
        if (kind === 'bull-lock') await redis.set(keys.bullLock('q1', id), 'a:other');
        const before = await redis.hgetall(keys.agent('a'));
        expect(await complete(id, token, kind === 'token' ? 'a:stale' : token)).toEqual({
          status: 'slow',
        });
        expect(await queue('q1').getJobState(id)).toBe('active');
        expect(await redis.hgetall(keys.agent('a'))).toEqual(before);
      });

      it('completes the job but leaves a draining agent to the caller', async () => {
        const { id, token } = await working();
        await redis.hset(keys.agent('a'), 'drainRequested', '1');
        const done = await complete(id, token);
        expect(done).toMatchObject({
          status: 'completed',
          result: { ok: false, reason: 'conflict', field: 'drainRequested' },
          step: undefined,
        });
        expect(await queue('q1').getJobState(id)).toBe('completed');
        expect(await redis.get(keys.finished(id))).toBe(`completed ${token}`);
        expect(await store.get('a')).toMatchObject({ state: 'working', taskId: id });
      });
    });

    describe('transitionThenClaim', () => {
      /** `a` works on t1 of q1 (version 3); the release is a completion's. */
      const working = () => workingAgent(200);
      const release = (version = 3) =>
        store.transitionThenClaim(
          {
            agentId: 'a',
            from: 'working',
            to: 'idle',
            version,
            reason: 'complete',
            task: 't1',
            del: ['taskId', 'token', 'taskQueue'],
            idleAdd: ['q1'],
          },
          'q1',
          500,
          30_000,
        );

      it('frees the agent and hands it the next job when no one waits longer', async () => {
        await working();
        const next = await queue('q1').add('next', {});
        clock = 1000;
        const { result, step } = await release();
        expect(result).toEqual({ ok: true, version: 4 });
        expect(step).toMatchObject({
          outcome: 'assigned',
          claim: { agentId: 'a', version: 5, queue: 'q1' },
          job: { id: next.id },
        });
        const token = step?.claim.token;
        expect(await store.get('a')).toMatchObject({ state: 'assigned', token, taskId: next.id });
        expect(await redis.get(keys.bullLock('q1', next.id ?? ''))).toBe(token);
        expect(await redis.zcard(keys.idle('q1'))).toBe(0);
      });

      it('claims nobody without a runnable job: the agent just goes idle', async () => {
        await working();
        clock = 1000;
        expect(await release()).toEqual({ result: { ok: true, version: 4 }, step: undefined });
        expect((await store.get('a'))?.state).toBe('idle');
        expect(await redis.zrange(keys.idle('q1'), '0', '-1')).toEqual(['a']);
      });

      it('claims the agent idle the longest, not necessarily the one it frees', async () => {
        await idleAgent('b', ['q1'], 100);
        await working();
        await queue('q1').add('next', {});
        clock = 1000;
        const { step } = await release();
        expect(step?.claim.agentId).toBe('b');
        expect((await store.get('a'))?.state).toBe('idle');
        expect((await store.get('b'))?.state).toBe('assigned');
      });

      it('claims nobody when the transition does not apply', async () => {
        await working();
        await queue('q1').add('next', {});
        const { result, step } = await release(99);
        expect(result).toMatchObject({ ok: false, reason: 'conflict', field: 'version' });
        expect(step).toBeUndefined();
        expect((await store.get('a'))?.state).toBe('working');
      });
    });
  });

  describe('accept', () => {
    async function assigned(agentId: string, timeoutMs?: number): Promise<void> {
      await idleAgent(agentId, ['q1'], 10);
      const result = await store.transition({
        agentId,
        from: 'idle',
        to: 'assigned',
        reason: 'assign',
        set: {
          taskId: 't1',
          token: `${agentId}:tok`,
          taskQueue: 'q1',
          ...(timeoutMs ? { taskTimeoutMs: timeoutMs } : {}),
        },
        idleRemove: ['q1'],
        index: { ackDeadline: 99 },
      });
      expect(result.ok).toBe(true);
    }

    it('moves assigned to working, leaves the ack index, enters the run-deadline index', async () => {
      await assigned('a', 5000);
      clock = 2000;
      expect(await store.accept('a', 't1', 'a:tok')).toEqual({
        version: 3,
        taskQueue: 'q1',
        replayed: false,
      });
      expect(await store.get('a')).toMatchObject({ state: 'working', startedAt: 2000 });
      expect(await redis.zscore(keys.ackDeadlines, 'a')).toBeNull();
      expect(await redis.zscore(keys.runDeadlines, 'a')).toBe('7000');
      const events = await redis.xrange(keys.events, '-', '+');
      expect(chunk(events.at(-1)?.[1] ?? [])).toEqual(
        expect.arrayContaining([
          ['from', 'assigned'],
          ['to', 'working'],
          ['reason', 'accept'],
        ]),
      );
    });

    it('answers a replay as replayed and refuses another task or token', async () => {
      await assigned('a');
      expect((await store.accept('a', 't1', 'a:tok'))?.replayed).toBe(false);
      expect(await store.accept('a', 't1', 'a:tok')).toEqual({
        version: 3,
        taskQueue: 'q1',
        replayed: true,
      });
      expect(await store.accept('a', 't1', 'a:other')).toBeUndefined();
      expect(await store.accept('a', 't2', 'a:tok')).toBeUndefined();
      expect(await redis.zscore(keys.runDeadlines, 'a')).toBeNull();
    });
  });

  /** Agent `a` done with its task: idle, holding none. */
  async function releaseAgent(): Promise<void> {
    const released = await store.transition({
      agentId: 'a',
      from: 'working',
      to: 'idle',
      reason: 'complete',
      del: ['taskId', 'token', 'taskQueue'],
    });
    expect(released.ok).toBe(true);
  }

  describe('appendTaskLog', () => {
    const appendLog = luaScript('appendTaskLog');
    const TOKEN_HASH = 'h'.repeat(64); // the one `idleAgent` registers
    const append = (lines: string[], token = 'a:tok', tokenHash = TOKEN_HASH) =>
      appendLog.run<number>(
        redis,
        [
          keys.agent('a'),
          keys.bullJob('q1', 't1'),
          keys.bullJobLogs('q1', 't1'),
          keys.bullLock('q1', 't1'),
        ],
        [3, 't1', token, tokenHash, ...lines],
      );
    const logged = () => redis.lrange(keys.bullJobLogs('q1', 't1'), 0, -1);

    it("writes only for the connection whose token is the record's, holding the task", async () => {
      await workingAgent(10);
      await redis.hset(keys.bullJob('q1', 't1'), 'name', 't1');
      // the job's lock ran out and the task went to another agent, whose token locks it now
      await redis.set(keys.bullLock('q1', 't1'), 'b:tok');
      expect(await append(['after the lock was lost'])).toBe(-1);
      await redis.set(keys.bullLock('q1', 't1'), 'a:tok');
      // a rotated token: refused before anything else, nothing written
      expect(await append(['rotated'], 'a:tok', 'x'.repeat(64))).toBe(-2);
      // another token of the task (a superseded assignment): nothing written
      expect(await append(['superseded'], 'a:old')).toBe(-1);
      expect(await logged()).toEqual([]);
      expect(await append(['one', 'two'])).toBe(2);
      // "" checks no token hash; the log keeps the last 3 lines
      expect(await append(['three', 'four'], 'a:tok', '')).toBe(3);
      expect(await logged()).toEqual(['two', 'three', 'four']);
    });

    it('writes nothing for an agent that no longer holds the task, or a job that is gone', async () => {
      await workingAgent(10);
      await redis.set(keys.bullLock('q1', 't1'), 'a:tok');
      expect(await append(['no job'])).toBe(-1);
      await redis.hset(keys.bullJob('q1', 't1'), 'name', 't1');
      await releaseAgent();
      expect(await append(['after the end'])).toBe(-1);
      expect(await logged()).toEqual([]);
    });
  });

  describe('updateTaskProgress', () => {
    const updateProgress = luaScript('updateTaskProgress');
    const TOKEN_HASH = 'h'.repeat(64); // the one `idleAgent` registers
    /** Runs the script as `AssignmentService.progress` does, the progress serialised as BullMQ does. */
    const update = (progress: unknown, token = 'a:tok', tokenHash = TOKEN_HASH) =>
      updateProgress.run<number>(
        redis,
        [
          keys.agent('a'),
          keys.bullJob('q1', 't1'),
          keys.bullEvents('q1'),
          keys.bullMeta('q1'),
          keys.bullLock('q1', 't1'),
        ],
        ['t1', token, tokenHash, JSON.stringify(progress)],
      );
    /** The `progress` entries of q1's events stream, as `[jobId, data]`. */
    const progressEvents = async () =>
      (await redis.xrange(keys.bullEvents('q1'), '-', '+'))
        .map(([, flat]) => Object.fromEntries(chunk(flat)))
        .filter((fields) => fields.event === 'progress')
        .map((fields) => [fields.jobId, fields.data]);
    const closing: Array<{ close(): Promise<void> }> = [];
    afterEach(async () => {
      await Promise.all(closing.splice(0).map((c) => c.close()));
    });
    /** A real BullMQ queue q1 of this test's prefix, with a job t1 and its twin t2. */
    async function queueWithJobs(): Promise<Queue> {
      const queue = new Queue('q1', { connection: redis, prefix: keys.bullPrefix });
      closing.push(queue);
      await queue.add('task', {}, { jobId: 't1' });
      await queue.add('task', {}, { jobId: 't2' });
      // t1 locked by the agent's assignment (as claimAndFetch's moveToActive does)
      await redis.set(keys.bullLock('q1', 't1'), 'a:tok');
      return queue;
    }

    it("writes only for the connection whose token is the record's, holding the task", async () => {
      await workingAgent(10);
      const queue = await queueWithJobs();
      // a rotated token: refused before anything else; another token of the task: refused
      expect(await update(50, 'a:tok', 'x'.repeat(64))).toBe(-2);
      expect(await update(50, 'a:old')).toBe(-1);
      // the job's lock ran out and the task went to another agent, whose token locks it now
      await redis.set(keys.bullLock('q1', 't1'), 'b:tok');
      expect(await update(50)).toBe(-1);
      await redis.set(keys.bullLock('q1', 't1'), 'a:tok');
      expect((await Job.fromId(queue, 't1'))?.progress).toBe(0);
      expect(await progressEvents()).toEqual([]);
      expect(await update(50)).toBe(0);
      // "" checks no token hash
      expect(await update(60, 'a:tok', '')).toBe(0);
      expect((await Job.fromId(queue, 't1'))?.progress).toBe(60);
      expect(await progressEvents()).toEqual([
        ['t1', '50'],
        ['t1', '60'],
      ]);
    });

    it("writes what BullMQ's own updateProgress writes: the job's progress and the event QueueEvents hears", async () => {
      await workingAgent(10);
      const queue = await queueWithJobs();
      // from the stream's start: no event is missed while QueueEvents connects
      const events = new QueueEvents('q1', {
        connection: { host: '127.0.0.1', port: server.port },
        prefix: keys.bullPrefix,
        lastEventId: '0-0',
      });
      closing.push(events);
      const heard: Array<{ jobId: string; data: unknown }> = [];
      const fourHeard = new Promise<void>((resolve) =>
        events.on('progress', ({ jobId, data }) => {
          if (heard.push({ jobId, data }) === 4) resolve();
        }),
      );
      const twin = await Job.fromId(queue, 't2');
      for (const progress of [{ percent: 40, message: 'half way' }, 75]) {
        expect(await update(progress)).toBe(0);
        await twin?.updateProgress(progress);
        // the job's field, raw and as BullMQ reads it, is the twin's
        expect(await redis.hget(keys.bullJob('q1', 't1'), 'progress')).toBe(
          await redis.hget(keys.bullJob('q1', 't2'), 'progress'),
        );
        expect((await queue.getJob('t1'))?.progress).toEqual(progress);
      }
      expect(await progressEvents()).toEqual([
        ['t1', '{"percent":40,"message":"half way"}'],
        ['t2', '{"percent":40,"message":"half way"}'],
        ['t1', '75'],
        ['t2', '75'],
      ]);
      await fourHeard;
      expect(heard).toEqual([
        { jobId: 't1', data: { percent: 40, message: 'half way' } },
        { jobId: 't2', data: { percent: 40, message: 'half way' } },
        { jobId: 't1', data: 75 },
        { jobId: 't2', data: 75 },
      ]);
    });

    it('writes nothing for an agent that no longer holds the task, or a job that is gone', async () => {
      await workingAgent(10);
      expect(await update(10)).toBe(-1);
      await redis.hset(keys.bullJob('q1', 't1'), 'name', 't1');
      await releaseAgent();
      expect(await update(20)).toBe(-1);
      expect(await redis.hget(keys.bullJob('q1', 't1'), 'progress')).toBeNull();
      expect(await redis.exists(keys.bullEvents('q1'))).toBe(0);
    });
  });

  describe('beginReport', () => {
    const begin = (outcome: 'completed' | 'failed', token = 'a:tok', lockId = 'L1') =>
      store.beginReport({
        agentId: 'a',
        taskId: 't1',
        token,
        outcome,
        lockId,
        lockTtlMs: 5000,
        finishedTtlMs: 60_000,
      });

    beforeEach(() => workingAgent(10));

    it('takes the report lock, records the intent and returns the record', async () => {
      const begun = await begin('completed');
      expect(begun).toMatchObject({ status: 'ok', previousMarker: '', cancelReason: undefined });
      expect(begun.status === 'ok' && begun.record.taskId).toBe('t1');
      expect(await redis.get(keys.reporting('t1'))).toBe('L1');
      // the intent names the queue: a replay can find the job even after the agent was released
      expect(await redis.get(keys.finished('t1'))).toBe('completing a:tok q1');
      expect(await begin('completed', 'a:tok', 'L2')).toEqual({ status: 'busy' });
    });

    it('returns the intent of an earlier attempt; a failure also gets the operator cancel', async () => {
      await begin('completed');
      await redis.del(keys.reporting('t1'));
      await redis.set(keys.cancelRequested('q1', 't1'), 'by operator');
      // a completion wins over a cancel request: it is not read
      expect(await begin('completed', 'a:tok', 'L2')).toMatchObject({
        status: 'ok',
        previousMarker: 'completing a:tok q1',
        cancelReason: undefined,
      });
      await redis.del(keys.reporting('t1'));
      expect(await begin('failed', 'a:tok', 'L3')).toMatchObject({
        status: 'ok',
        previousMarker: 'completing a:tok q1',
        cancelReason: 'by operator',
      });
    });

    it("records a failure's intent with the job's attempt and stall counts; a replay keeps the first", async () => {
      await redis.hset(keys.bullJob('q1', 't1'), { atm: '2', stc: '1' });
      expect(await begin('failed')).toMatchObject({
        status: 'ok',
        previousMarker: '',
        intent: 'failing a:tok q1 2 1',
      });
      expect(await redis.get(keys.finished('t1'))).toBe('failing a:tok q1 2 1');
      // BullMQ's part counts an attempt, then the replica dies: the replay compares with the first
      await redis.hset(keys.bullJob('q1', 't1'), { atm: '3' });
      await redis.del(keys.reporting('t1'));
      expect(await begin('failed', 'a:tok', 'L2')).toMatchObject({
        status: 'ok',
        previousMarker: 'failing a:tok q1 2 1',
        intent: 'failing a:tok q1 2 1',
      });
      await redis.del(keys.reporting('t1'));
      // no intent for a report superseded
      expect(await begin('failed', 'a:stale', 'L3')).toMatchObject({ status: 'superseded' });
      expect(await redis.get(keys.finished('t1'))).toBe('failing a:tok q1 2 1');
    });

    it("releases the report lock only while it is still the caller's", async () => {
      await redis.set(keys.reporting('t1'), 'someone-else');
      await store.releaseReportLock('t1', 'L1');
      expect(await redis.get(keys.reporting('t1'))).toBe('someone-else');
      await store.releaseReportLock('t1', 'someone-else');
      expect(await redis.exists(keys.reporting('t1'))).toBe(0);
    });

    it('leaves no intent behind when a completion is superseded', async () => {
      expect(await begin('completed', 'a:stale')).toEqual({
        status: 'superseded',
        previousMarker: '',
      });
      expect(await redis.exists(keys.finished('t1'))).toBe(0);
    });

    it('answers an applied report as a duplicate and a stranger as superseded', async () => {
      await redis.set(keys.finished('t1'), 'failed a:tok');
      expect((await begin('failed')).status).toBe('duplicate');
      await redis.del(keys.reporting('t1'));
      expect(await begin('completed', 'a:stale')).toEqual({
        status: 'superseded',
        previousMarker: 'failed a:tok',
      });
      expect(await redis.get(keys.reporting('t1'))).toBeNull();
      expect(await redis.get(keys.finished('t1'))).toBe('failed a:tok');
    });
  });

  describe('transition extras', () => {
    it('refuses the change while an `absent` key exists, and names its value', async () => {
      await idleAgent('a', ['q1'], 10);
      await redis.set('blocker', 'why');
      const result = await store.transition({
        agentId: 'a',
        from: 'idle',
        to: 'draining',
        reason: 'drain',
        absent: ['blocker'],
      });
      expect(result).toMatchObject({ ok: false, field: '@absent', actual: 'why' });
      expect((await store.get('a'))?.state).toBe('idle');
    });

    it('applies `always` operations whatever the outcome', async () => {
      await idleAgent('a', ['q1'], 10);
      await redis.set('lock', 'mine');
      await redis.set('other-lock', 'theirs');
      const result = await store.transition({
        agentId: 'a',
        from: 'working',
        to: 'idle',
        reason: 'complete',
        always: {
          set: [{ key: 'marker', value: 'done', ttlMs: 10_000 }],
          delIf: [
            { key: 'lock', value: 'mine' },
            { key: 'other-lock', value: 'mine' },
          ],
        },
      });
      expect(result.ok).toBe(false);
      expect(await redis.get('marker')).toBe('done');
      expect(await redis.pttl('marker')).toBeGreaterThan(9000);
      expect(await redis.get('lock')).toBeNull();
      expect(await redis.get('other-lock')).toBe('theirs');
    });

    it('`idleAddOwn` lists the agent in the idle set of each of its queues, as the patch leaves them', async () => {
      await idleAgent('a', ['q1', 'q2'], 10);
      await redis.del(keys.idle('q1'), keys.idle('q2'));
      clock = 20;
      const own = (patch: { set?: Record<string, string>; del?: string[] } = {}) =>
        store.transition({
          agentId: 'a',
          from: 'idle',
          to: 'idle',
          reason: 'resume',
          idleAddOwn: true,
          ...patch,
        });
      expect((await own()).ok).toBe(true);
      expect(await redis.zrange(keys.idle('q1'), '0', '-1', 'WITHSCORES')).toEqual(['a', '20']);
      expect(await redis.zrange(keys.idle('q2'), '0', '-1')).toEqual(['a']);
      expect((await own({ set: { queues: 'q3' } })).ok).toBe(true);
      expect(await redis.zrange(keys.idle('q3'), '0', '-1')).toEqual(['a']);
      // a patch that deletes the field lists the agent nowhere
      await redis.hset(keys.agent('a'), 'queues', 'q1,q2');
      await redis.del(keys.idle('q1'), keys.idle('q2'), keys.idle('q3'));
      expect((await own({ del: ['queues'] })).ok).toBe(true);
      expect(await redis.exists(keys.idle('q1'), keys.idle('q2'), keys.idle('q3'))).toBe(0);
    });

    it('counts `incr` fields from their current value with the patch', async () => {
      await idleAgent('a', ['q1'], 10);
      const apply = () =>
        store.transition({
          agentId: 'a',
          from: 'idle',
          to: 'idle',
          reason: 'resume',
          incr: { tasksDone: 2, tasksFailed: 1 },
        });
      expect((await apply()).ok).toBe(true);
      expect((await apply()).ok).toBe(true);
      const record = await redis.hgetall(keys.agent('a'));
      expect([record.tasksDone, record.tasksFailed, record.version]).toEqual(['4', '2', '3']);
    });
  });

  describe('heartbeats', () => {
    it('checks a batch in one call and records the time only on the connection the record names', async () => {
      await idleAgent('a', ['q1'], 10);
      await idleAgent('b', ['q1'], 20);
      clock = 5000;
      const tokenHash = 'h'.repeat(64);
      const presences = await store.heartbeats([
        { agentId: 'a', socketId: 's-a', tokenHash },
        { agentId: 'b', socketId: 'an-old-socket', tokenHash },
        { agentId: 'ghost', socketId: 's-ghost', tokenHash },
      ]);
      expect(presences).toEqual([
        {
          state: 'idle',
          socketId: 's-a',
          taskId: undefined,
          token: undefined,
          taskQueue: undefined,
        },
        {
          state: 'idle',
          socketId: 's-b',
          taskId: undefined,
          token: undefined,
          taskQueue: undefined,
        },
        undefined,
      ]);
      expect(await redis.hget(keys.agent('a'), 'lastHeartbeatAt')).toBe('5000');
      expect(await redis.hget(keys.agent('b'), 'lastHeartbeatAt')).toBeNull();
      expect(await redis.exists(keys.agent('ghost'))).toBe(0);
    });

    it('flags a connection whose token the record no longer holds, and records no time for it', async () => {
      await idleAgent('rotated', ['q1'], 10);
      await idleAgent('revoked', ['q1'], 10);
      await store.register('rotated', 'n'.repeat(64));
      await store.revokeToken('revoked');
      clock = 6000;
      const old = 'h'.repeat(64);
      const presences = await store.heartbeats([
        { agentId: 'rotated', socketId: 's-rotated', tokenHash: old },
        { agentId: 'revoked', socketId: 's-revoked', tokenHash: old },
        { agentId: 'rotated', socketId: 's-rotated', tokenHash: 'n'.repeat(64) },
      ]);
      expect(presences.map((p) => p?.tokenRevoked)).toEqual([true, true, undefined]);
      // only the heartbeat with the record's token counts as the agent's
      expect(await redis.hget(keys.agent('rotated'), 'lastHeartbeatAt')).toBe('6000');
      expect(await redis.hget(keys.agent('revoked'), 'lastHeartbeatAt')).toBeNull();
    });
  });
});

function chunk(flat: string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i] ?? '', flat[i + 1] ?? '']);
  return pairs;
}

import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { UNFINISHED_IDEMPOTENCY_TTL_MS } from '../../hub/src/tasks/idempotency-keys';
import { allowHubEveryKey, becomeAclAdmin, refuseHubWritesTo } from '../helpers/acl';
import { bullBoardPut } from '../helpers/bull-board';
import { createPushed, freshAgentAssigned, registerFreshAgent } from '../helpers/fresh-agent';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startHubProcess, type HubProcess } from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * An idempotency key whose settle Redis refuses: the hub's user (`default`) may read the key but
 * not write it (ACL), so BullMQ's part of a task's end, which only reads it (PTTL), goes through,
 * and `settleIdempotencyKey.lua` fails at its SET. The settle is run again on the sweeper's tick
 * once Redis takes it: a finished task's key left to its ten years refused every later create with
 * it as a duplicate, and a retried task's key left to its 24 h let a repeat create it twice.
 */
describe('idempotency keys: a settle Redis refuses is run again', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  /** A user of the test's own: the ACL restricts the hub's (`default`). */
  let admin: Redis;
  const agents: TestAgent[] = [];
  /** Replicas of their own process a test started: killed after it. */
  const replicas: HubProcess[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    await becomeAclAdmin(admin);
  });
  afterEach(async () => {
    for (const agent of agents.splice(0)) agent.close();
    await Promise.all(replicas.splice(0).map((replica) => replica.kill('SIGKILL')));
    await allowHubEveryKey(admin);
  });
  afterAll(async () => {
    await admin.quit();
    await hub.close();
    await redis.dispose();
  });

  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const newKey = () => `key-${randomBytes(4).toString('hex')}`;
  const keyName = (queue: string, key: string) => hub.keys.bullDeduplication(queue, key);
  const ttlOf = (queue: string, key: string) => admin.pttl(keyName(queue, key));
  const stateOf = async (id: string): Promise<string> =>
    (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body.state;

  /** What `counter` of this replica counted for `queue`. */
  const countOf = async (
    counter: Hub['metrics']['tasksCompleted'],
    queue: string,
  ): Promise<number> =>
    (await counter.get()).values.find((v) => v.labels.queue === queue)?.value ?? 0;

  const register = (queue: string): Promise<TestAgent> =>
    registerFreshAgent(agents, hub.url, queue, 'a');

  /** The key names `id` for longer than any task waits: not settled since the task's create. */
  async function expectHeld(queue: string, key: string, id: string) {
    expect(await admin.get(keyName(queue, key))).toBe(id);
    expect(await ttlOf(queue, key)).toBeGreaterThan(UNFINISHED_IDEMPOTENCY_TTL_MS - 60_000);
  }

  /** The key names `id` and expires within a day (the task ended, or its end was settled). */
  async function expectKeptADay(queue: string, key: string, id: string) {
    expect(await admin.get(keyName(queue, key))).toBe(id);
    const ttl = await ttlOf(queue, key);
    expect(ttl).toBeGreaterThan(DAY_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(DAY_MS);
  }

  /** Redis takes the hub's writes again: the deferred settle goes through, the key kept a day. */
  async function expectSettledOnceAllowed(queue: string, key: string, id: string) {
    await allowHubEveryKey(admin);
    await eventually(async () => ((await ttlOf(queue, key)) <= DAY_MS ? true : undefined), {
      what: 'the deferred settle to go through',
      timeoutMs: 10_000,
    });
    await expectKeptADay(queue, key, id);
  }

  /** The member of `deferredSettles` that records the refused settle of task `id`. */
  const recordedSettleOf = (id: string): Promise<string> =>
    eventually(
      async () =>
        (await admin.zrange(hub.keys.deferredSettles, '0', '-1')).find(
          (member) => (JSON.parse(member) as unknown[])[1] === id,
        ),
      { what: `the refused settle of ${id} recorded` },
    );

  it.each([['a completion applied step by step'], ['a failure for good']])(
    'the settle after %s: the report is answered, the key settled once Redis takes it',
    async (report) => {
      const key = newKey();
      const completion = report !== 'a failure for good';
      const { agent, queue, id, assignment } = await freshAgentAssigned(agents, hub.url, {
        payload: 1,
        attempts: completion ? 2 : 1,
        idempotencyKey: key,
      });
      let msg = assignment;
      await agent.accept(msg);
      if (completion) {
        // the finished marker of a failed attempt sends the next one's completion step by step
        const assigned = agent.nextAssignment();
        expect(await agent.fail(msg, { error: 'once', retryable: true })).toEqual({ ok: true });
        msg = await assigned;
        await agent.accept(msg);
      }

      await refuseHubWritesTo(admin, keyName(queue, key));
      const ack = completion
        ? await agent.complete(msg, 'done')
        : await agent.fail(msg, { error: 'broken', retryable: false });
      // applied: the settle's failure is no failure of the report (the old code answered
      // E_INTERNAL, and the replay, a duplicate, settled nothing)
      expect(ack).toEqual({ ok: true });
      expect(await stateOf(id)).toBe(completion ? 'completed' : 'failed');
      expect(await admin.hget(hub.keys.agent(agent.agentId), 'state')).toBe('idle');
      await expectHeld(queue, key, id); // the settle could not write it

      await expectSettledOnceAllowed(queue, key, id);
      expect(
        await api(hub.url, 'POST', '/v1/tasks', { queue, payload: 2, idempotencyKey: key }),
      ).toEqual({
        status: 200,
        body: { id, state: completion ? 'completed' : 'failed', duplicate: true },
      });
    },
  );

  /**
   * A task under a new key, failed for good by a new agent of `url` while Redis refused writes to
   * its key: the failure answered, the settle refused.
   */
  async function failedWithSettleRefused(url: string) {
    const key = newKey();
    const { agent, queue, id, assignment } = await freshAgentAssigned(agents, url, {
      payload: 1,
      attempts: 1,
      idempotencyKey: key,
    });
    await agent.accept(assignment);
    await refuseHubWritesTo(admin, keyName(queue, key));
    expect(await agent.fail(assignment, { error: 'broken', retryable: false })).toEqual({
      ok: true,
    });
    return { agent, queue, key, id };
  }

  it('the settle inside the completion at once: the report is answered, the key settled once Redis takes it', async () => {
    const key = newKey();
    const { agent, queue, id, assignment } = await freshAgentAssigned(agents, hub.url, {
      payload: 1,
      idempotencyKey: key,
    });
    await agent.accept(assignment);

    await refuseHubWritesTo(admin, keyName(queue, key));
    // the old code's script failed at the settle, after the job's completion and the agent's
    // release: the report was answered E_INTERNAL, its replay as a duplicate, the key left
    expect(await agent.complete(assignment, 'done')).toEqual({ ok: true });
    expect(await countOf(hub.metrics.completionsAtOnce, queue)).toBe(1); // the path under test
    expect(await stateOf(id)).toBe('completed');
    expect(await admin.hget(hub.keys.agent(agent.agentId), 'state')).toBe('idle');
    await expectHeld(queue, key, id); // the settle could not write it

    await expectSettledOnceAllowed(queue, key, id);
    // completed once: the replay is a duplicate, the agent counted one task done
    expect(await agent.complete(assignment, 'done')).toEqual({ ok: true, duplicate: true });
    expect(await countOf(hub.metrics.tasksCompleted, queue)).toBe(1);
    expect(await admin.hget(hub.keys.agent(agent.agentId), 'tasksDone')).toBe('1');
  });

  it('a settle refused on a replica killed since: another replica settles the key', async () => {
    // another replica of the hub's keys, a process of its own, so that it can die at once
    const killed = await startHubProcess(redis.url, hub.config.prefix, `a-${newQueue()}`);
    replicas.push(killed);
    const { queue, key, id } = await failedWithSettleRefused(killed.url);
    await expectHeld(queue, key, id); // the settle could not write it

    await killed.kill('SIGKILL');
    await allowHubEveryKey(admin);
    // the old code kept the settle in the memory of the replica that died: the key kept its ten
    // years, and every later create with it was answered as a duplicate of the failed task
    await eventually(async () => ((await ttlOf(queue, key)) <= DAY_MS ? true : undefined), {
      what: "the other replica's sweeper to settle the key",
      timeoutMs: 15_000,
    });
    await expectKeptADay(queue, key, id);
  });

  it("Bull Board's retry whose re-hold Redis refuses: answered, the key held again once Redis takes it", async () => {
    const queue = newQueue();
    const agent = await register(queue);
    const key = newKey();
    const { created, msg } = await createPushed(agent, hub.url, {
      queue,
      payload: 1,
      idempotencyKey: key,
    });
    const id = created.body.id;
    await agent.accept(msg);
    await agent.fail(msg, { error: 'broken', retryable: false });
    agent.close(); // the retried task waits
    await expectKeptADay(queue, key, id);

    await refuseHubWritesTo(admin, keyName(queue, key));
    const retried = await bullBoardPut(hub.url, `${queue}/${id}/retry`);
    // the retry is done (BullMQ's part): the answer says so; the key is held again later
    expect(retried.status).toBe(204);
    expect(await stateOf(id)).toBe('waiting');
    expect(await ttlOf(queue, key)).toBeLessThanOrEqual(DAY_MS);

    await allowHubEveryKey(admin);
    // the old code gave up at the first failure: the key kept its 24 h, and a repeat a day later
    // created the still waiting task again
    await eventually(
      async () =>
        (await ttlOf(queue, key)) > UNFINISHED_IDEMPOTENCY_TTL_MS - 60_000 ? true : undefined,
      { what: 'the key held again', timeoutMs: 10_000 },
    );
    await expectHeld(queue, key, id);
  });

  it('the settle inside the cancel of a task waiting for its retry: the cancel is answered, the key settled once Redis takes it', async () => {
    const key = newKey();
    const { agent, queue, id, assignment } = await freshAgentAssigned(agents, hub.url, {
      payload: 1,
      attempts: 2,
      backoff: { type: 'fixed', delayMs: 600_000 },
      idempotencyKey: key,
    });
    await agent.accept(assignment);
    // started, then waiting for its retry: the cancel fails it as cancelled where it waits
    expect(await agent.fail(assignment, { error: 'once', retryable: true })).toEqual({ ok: true });
    expect(await stateOf(id)).toBe('delayed');

    await refuseHubWritesTo(admin, keyName(queue, key));
    // the old code's script failed at the settle, after the task was failed as cancelled: the
    // cancel was answered E_INTERNAL, nothing ran the settle again, and the key kept ten years
    expect(await api(hub.url, 'POST', `/v1/tasks/${id}/cancel`)).toEqual({
      status: 200,
      body: { id, state: 'cancelled' },
    });
    expect(await stateOf(id)).toBe('cancelled');
    await expectHeld(queue, key, id); // the settle could not write it

    await expectSettledOnceAllowed(queue, key, id);
    expect(
      await api(hub.url, 'POST', '/v1/tasks', { queue, payload: 2, idempotencyKey: key }),
    ).toEqual({ status: 200, body: { id, state: 'cancelled', duplicate: true } });
  });

  it('a settle run late, after the task was retried and removed from Bull Board: the key the removal freed stays free', async () => {
    const { agent, queue, key, id } = await failedWithSettleRefused(hub.url);
    // the refused settle, recorded: not run until the test makes it due (a run that fails
    // meanwhile only puts it later: GT)
    const member = await recordedSettleOf(id);
    await admin.zadd(hub.keys.deferredSettles, 'XX', Date.now() + 60 * 60 * 1000, member);
    await allowHubEveryKey(admin);

    agent.close(); // the retried task waits
    await eventually(
      async () =>
        (await admin.hget(hub.keys.agent(agent.agentId), 'state')) === 'offline' ? true : undefined,
      { what: 'the agent offline' },
    );
    expect((await api(hub.url, 'POST', `/v1/tasks/${id}/retry`)).status).toBe(200);
    await expectHeld(queue, key, id);
    // removed while it waits (Bull Board's clean of the job): its key is freed, as designed
    expect((await bullBoardPut(hub.url, `${queue}/${id}/clean`)).status).toBe(204);
    expect(await ttlOf(queue, key)).toBe(-2);

    await admin.zadd(hub.keys.deferredSettles, 'XX', Date.now(), member);
    await eventually(
      async () =>
        (await admin.zscore(hub.keys.deferredSettles, member)) === null ? true : undefined,
      { what: 'the recorded settle run', timeoutMs: 10_000 },
    );
    // the old code took the job's absence for the task's end and set the key for 24 h: a create
    // with it was answered as a duplicate of the removed task
    expect(await ttlOf(queue, key)).toBe(-2);
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: 2,
      idempotencyKey: key,
    });
    expect(created.status).toBe(201);
    expect(created.body.id).not.toBe(id);
  });
});

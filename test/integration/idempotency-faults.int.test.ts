import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { UNFINISHED_IDEMPOTENCY_TTL_MS } from '../../hub/src/tasks/idempotency-keys';
import { allowHubEveryKey, becomeAclAdmin, refuseHubWritesTo } from '../helpers/acl';
import { bullBoardPut } from '../helpers/bull-board';
import { createPushed, freshAgentAssigned, registerFreshAgent } from '../helpers/fresh-agent';
import { api, eventually, startTestHub } from '../helpers/hub';
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

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    await becomeAclAdmin(admin);
  });
  afterEach(async () => {
    for (const agent of agents.splice(0)) agent.close();
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

      await allowHubEveryKey(admin);
      await eventually(async () => ((await ttlOf(queue, key)) <= DAY_MS ? true : undefined), {
        what: 'the deferred settle to go through',
        timeoutMs: 10_000,
      });
      await expectKeptADay(queue, key, id);
      expect(
        await api(hub.url, 'POST', '/v1/tasks', { queue, payload: 2, idempotencyKey: key }),
      ).toEqual({
        status: 200,
        body: { id, state: completion ? 'completed' : 'failed', duplicate: true },
      });
    },
  );

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
});

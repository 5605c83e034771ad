import { randomBytes } from 'node:crypto';
import { Worker } from 'bullmq';
import type { TaskView } from '@agentcom/shared';
import type { Hub } from '../../hub/src/hub';
import { UNFINISHED_IDEMPOTENCY_TTL_MS } from '../../hub/src/tasks/idempotency-keys';
import { bullBoardPut } from '../helpers/bull-board';
import { createPushed, registerFreshAgent } from '../helpers/fresh-agent';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

type TestHub = Hub & { url: string };
type CreatedTask = { id: string; state: string; duplicate?: boolean };

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * How long an idempotency key (BullMQ's deduplication key) lives at each stage of its task, read
 * from Redis (PTTL) instead of waited for: ten years while the task is not finished, longer than
 * it can wait, and 24 h from its end once it finished (completed, failed, cancelled), by
 * whichever path it ended. A key that expired under a task still waiting let a repeated create
 * make the task twice.
 */
describe('idempotency keys: held while the task is not finished, 24 h after its end', () => {
  let redis: RedisProcess;
  /** Keeps finished tasks (the default retention). */
  let hub: TestHub;
  /** Keeps no finished task: a job is gone as it ends, its key must not go with it. */
  let trimming: TestHub;
  /** Fails a task at its first stall, soon (its agent vanished). */
  let stalling: TestHub;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    trimming = await startTestHub(redis.url, {
      RETENTION_COMPLETED_COUNT: '0',
      RETENTION_FAILED_COUNT: '0',
    });
    stalling = await startTestHub(redis.url, {
      MAX_STALLED_COUNT: '0',
      LEASE_MS: '1000',
      ACK_TIMEOUT_MS: '500',
    });
  });
  afterEach(() => {
    for (const agent of agents.splice(0)) agent.close();
  });
  afterAll(async () => {
    await Promise.all([hub, trimming, stalling].map((h) => h.close()));
    await redis.dispose();
  });

  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const newKey = () => `key-${randomBytes(4).toString('hex')}`;

  const register = (target: TestHub, queue: string): Promise<TestAgent> =>
    registerFreshAgent(agents, target.url, queue, 'a');
  /** A new queue, and a new agent serving it on `target`. */
  async function agentOfNewQueue(target: TestHub) {
    const queue = newQueue();
    return { queue, agent: await register(target, queue) };
  }

  async function create(
    target: TestHub,
    body: Record<string, unknown>,
  ): Promise<{ status: number; body: CreatedTask }> {
    return api(target.url, 'POST', '/v1/tasks', body);
  }

  /**
   * A task of `queue` under idempotency `key` (payload 1, `fields` added), created on `target`,
   * pushed to `agent` and accepted: the create's answer, and the push.
   */
  async function createAccepted(
    target: TestHub,
    agent: TestAgent,
    queue: string,
    key: string,
    fields: Record<string, unknown> = {},
  ) {
    const body = { queue, payload: 1, idempotencyKey: key, ...fields };
    const pushed = await createPushed<CreatedTask>(agent, target.url, body);
    await agent.accept(pushed.msg);
    return pushed;
  }

  /** A new agent of a new queue on `hub`, which failed for good a task under a new key. */
  async function failedForGood() {
    const { queue, agent } = await agentOfNewQueue(hub);
    const key = newKey();
    const { created, msg } = await createAccepted(hub, agent, queue, key);
    await agent.fail(msg, { error: 'broken', retryable: false });
    return { queue, agent, key, created };
  }

  /** A Bull Board call on `hub` once Bull Board lists the queue. */
  const boardCall = (path: string): Promise<Response> => bullBoardPut(hub.url, path);

  /** The two retentions of finished tasks a test runs with, by what the replica keeps. */
  const RETENTIONS: Array<[string, () => TestHub]> = [
    ['keeps finished tasks', () => hub],
    ['keeps no finished task', () => trimming],
  ];

  /** The key's time to live: -1 without expiry, -2 when there is no key. */
  const ttlOf = (target: TestHub, queue: string, key: string): Promise<number> =>
    target.redis.command.pttl(target.keys.bullDeduplication(queue, key));
  const holderOf = (target: TestHub, queue: string, key: string): Promise<string | null> =>
    target.redis.command.get(target.keys.bullDeduplication(queue, key));

  /** The key names `id` and expires about 24 h from now (the task just ended). */
  async function expectKeptADay(target: TestHub, queue: string, key: string, id: string) {
    expect(await holderOf(target, queue, key)).toBe(id);
    const ttl = await ttlOf(target, queue, key);
    expect(ttl).toBeGreaterThan(DAY_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(DAY_MS);
  }

  /** The key names `id` for longer than any task waits (and has a TTL: see the test below). */
  async function expectHeld(target: TestHub, queue: string, key: string, id: string) {
    expect(await holderOf(target, queue, key)).toBe(id);
    expect(await ttlOf(target, queue, key)).toBeGreaterThan(UNFINISHED_IDEMPOTENCY_TTL_MS - 60_000);
  }

  const stateOf = async (target: TestHub, id: string): Promise<string> =>
    (await api<TaskView>(target.url, 'GET', `/v1/tasks/${id}`)).body.state;

  it('names a waiting or delayed task for years; a repeat answers it, however long it waits', async () => {
    const queue = newQueue(); // nobody serves it
    const waitingKey = newKey();
    const waiting = await create(hub, { queue, payload: 1, idempotencyKey: waitingKey });
    expect(waiting.status).toBe(201);
    // it expired 24 h after the task was due: a task waiting longer was created again
    await expectHeld(hub, queue, waitingKey, waiting.body.id);
    expect(await create(hub, { queue, payload: 2, idempotencyKey: waitingKey })).toEqual({
      status: 200,
      body: { id: waiting.body.id, state: 'waiting', duplicate: true },
    });

    const delayedKey = newKey();
    const delayed = await create(hub, {
      queue,
      payload: 1,
      delayMs: 3 * DAY_MS,
      idempotencyKey: delayedKey,
    });
    await expectHeld(hub, queue, delayedKey, delayed.body.id);

    const [batched] = (
      await api<{ tasks: Array<{ id: string }> }>(hub.url, 'POST', '/v1/tasks/batch', {
        tasks: [{ queue, payload: 1, idempotencyKey: newKey() }],
      })
    ).body.tasks;
    const batchKey = (await hub.redis.command.hget(hub.keys.bullJob(queue, batched!.id), 'deid'))!;
    await expectHeld(hub, queue, batchKey, batched!.id);
  });

  it.each(RETENTIONS)(
    'a replica that %s: 24 h after a completion, at once or after a retried attempt (step by step)',
    async (_, target) => {
      const replica = target();
      const { queue, agent } = await agentOfNewQueue(replica);

      const key = newKey();
      const { created, msg } = await createPushed<CreatedTask>(agent, replica.url, {
        queue,
        payload: 1,
        idempotencyKey: key,
      });
      await expectHeld(replica, queue, key, created.body.id); // running
      expect(await agent.accept(msg)).toMatchObject({ ok: true });
      expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
      await expectKeptADay(replica, queue, key, created.body.id);
      expect(await create(replica, { queue, payload: 2, idempotencyKey: key })).toEqual({
        status: 200,
        body: { id: created.body.id, state: 'completed', duplicate: true },
      });

      // a failed attempt leaves the finished marker of its report: the completion of the next
      // attempt is applied step by step (BullMQ's completion, then the rest)
      const retriedKey = newKey();
      const { created: retried, msg: firstAttempt } = await createAccepted(
        replica,
        agent,
        queue,
        retriedKey,
        { attempts: 2 },
      );
      const assigned = agent.nextAssignment();
      expect(await agent.fail(firstAttempt, { error: 'once', retryable: true })).toEqual({
        ok: true,
      });
      const secondAttempt = await assigned;
      await expectHeld(replica, queue, retriedKey, retried.body.id); // its second attempt
      await agent.accept(secondAttempt);
      expect(await agent.complete(secondAttempt, 'second time')).toEqual({ ok: true });
      await expectKeptADay(replica, queue, retriedKey, retried.body.id);
    },
  );

  it.each(RETENTIONS)(
    'a replica that %s: 24 h after a failure for good, or the cancel of a running task',
    async (_, target) => {
      const replica = target();
      const { queue, agent } = await agentOfNewQueue(replica);

      const failedKey = newKey();
      const { created: failed, msg } = await createAccepted(replica, agent, queue, failedKey);
      expect(await agent.fail(msg, { error: 'broken', retryable: false })).toEqual({ ok: true });
      await expectKeptADay(replica, queue, failedKey, failed.body.id);
      expect(await create(replica, { queue, payload: 2, idempotencyKey: failedKey })).toEqual({
        status: 200,
        body: { id: failed.body.id, state: 'failed', duplicate: true },
      });

      const cancelledKey = newKey();
      const { created: running, msg: runningMsg } = await createAccepted(
        replica,
        agent,
        queue,
        cancelledKey,
      );
      const cancel = await api(replica.url, 'POST', `/v1/tasks/${running.body.id}/cancel`);
      expect(cancel.status).toBe(202);
      await expectHeld(replica, queue, cancelledKey, running.body.id); // still running
      await agent.fail(runningMsg, { error: 'stopped', retryable: false, kind: 'cancelled' });
      await expectKeptADay(replica, queue, cancelledKey, running.body.id);
      expect(await create(replica, { queue, payload: 2, idempotencyKey: cancelledKey })).toEqual({
        status: 200,
        body: { id: running.body.id, state: 'cancelled', duplicate: true },
      });
    },
  );

  it('24 h after the cancel of a waiting task, or of one waiting for its retry', async () => {
    const idleQueue = newQueue();
    const key = newKey();
    const waiting = await create(hub, { queue: idleQueue, payload: 1, idempotencyKey: key });
    expect((await api(hub.url, 'POST', `/v1/tasks/${waiting.body.id}/cancel`)).status).toBe(200);
    await expectKeptADay(hub, idleQueue, key, waiting.body.id);
    expect(await create(hub, { queue: idleQueue, payload: 2, idempotencyKey: key })).toEqual({
      status: 200,
      body: { id: waiting.body.id, state: 'cancelled', duplicate: true },
    });

    const { queue, agent } = await agentOfNewQueue(hub);
    const retryKey = newKey();
    const { created, msg } = await createAccepted(hub, agent, queue, retryKey, {
      attempts: 2,
      backoff: { type: 'fixed', delayMs: DAY_MS },
    });
    await agent.fail(msg, { error: 'once', retryable: true });
    expect(await stateOf(hub, created.body.id)).toBe('delayed'); // a day before its retry
    await expectHeld(hub, queue, retryKey, created.body.id);
    expect((await api(hub.url, 'POST', `/v1/tasks/${created.body.id}/cancel`)).status).toBe(200);
    expect(await stateOf(hub, created.body.id)).toBe('cancelled');
    await expectKeptADay(hub, queue, retryKey, created.body.id);
  });

  it('a retry from Bull Board holds the key again', async () => {
    const { queue, agent, key, created } = await failedForGood();
    agent.close(); // the retried task waits
    await expectKeptADay(hub, queue, key, created.body.id);

    const retried = await boardCall(`${queue}/${created.body.id}/retry`);
    expect(retried.status).toBe(204);
    expect(await stateOf(hub, created.body.id)).toBe('waiting');
    // settled once Bull Board answered: BullMQ's retry left the key to expire 24 h after the
    // failure, and a task still waiting then was created twice
    await eventually(
      async () =>
        (await ttlOf(hub, queue, key)) > UNFINISHED_IDEMPOTENCY_TTL_MS - 60_000 ? true : undefined,
      { what: 'the key held again' },
    );
    await expectHeld(hub, queue, key, created.body.id);
  });

  /** Ends each task the agent is handed, `count` of them, as `end` says. */
  async function endEach(agent: TestAgent, count: number, end: 'complete' | 'fail') {
    for (let i = 0; i < count; i++) {
      const msg = await eventually(() => agent.assignments[i], { what: `task ${i} pushed` });
      await agent.accept(msg);
      const ack =
        end === 'complete'
          ? await agent.complete(msg, 'done')
          : await agent.fail(msg, { error: 'broken', retryable: false });
      expect(ack).toEqual({ ok: true });
    }
    agent.assignments.splice(0, count);
  }

  it('Bull Board\'s "retry all" holds the key of every task it retried, failed or completed, over pages', async () => {
    const { queue, agent } = await agentOfNewQueue(hub);
    const completedKeys = [newKey(), newKey()];
    const completed = await api<{ tasks: Array<{ id: string }> }>(
      hub.url,
      'POST',
      '/v1/tasks/batch',
      {
        tasks: completedKeys.map((idempotencyKey) => ({ queue, payload: 1, idempotencyKey })),
      },
    );
    await endEach(agent, completedKeys.length, 'complete');
    // more than one page of Bull Board's retry (100 jobs), and a task without a key
    const failedKeys = Array.from({ length: 130 }, newKey);
    const failed = await api<{ tasks: Array<{ id: string }> }>(hub.url, 'POST', '/v1/tasks/batch', {
      tasks: [
        ...failedKeys.map((idempotencyKey) => ({ queue, payload: 1, idempotencyKey })),
        { queue, payload: 1 },
      ],
    });
    await endEach(agent, failedKeys.length + 1, 'fail');
    agent.close(); // the retried tasks wait
    await expectKeptADay(hub, queue, failedKeys[0]!, failed.body.tasks[0]!.id);

    const retriedFailed = await boardCall(`${queue}/retry/failed`);
    expect(retriedFailed.status).toBe(200);
    expect(await retriedFailed.json()).toEqual({ retried: failedKeys.length + 1, skipped: 0 });
    const retriedCompleted = await boardCall(`${queue}/retry/completed`);
    expect(await retriedCompleted.json()).toEqual({ retried: completedKeys.length, skipped: 0 });

    // held before Bull Board answered: its retry left each key to expire 24 h after the task's
    // end, and a repeat a day later created a task still waiting again
    const tasks = [...completed.body.tasks, ...failed.body.tasks];
    const keys = [...completedKeys, ...failedKeys];
    const held = hub.redis.command.pipeline();
    for (const key of keys) held.get(hub.keys.bullDeduplication(queue, key));
    for (const key of keys) held.pttl(hub.keys.bullDeduplication(queue, key));
    const replies = ((await held.exec()) ?? []).map(([, value]) => value);
    expect(replies.slice(0, keys.length)).toEqual(tasks.slice(0, keys.length).map((t) => t.id));
    const shortest = Math.min(...(replies.slice(keys.length) as number[]));
    expect(shortest).toBeGreaterThan(UNFINISHED_IDEMPOTENCY_TTL_MS - 60_000);
    expect(await stateOf(hub, tasks[0]!.id)).toBe('waiting');
  });

  it("Bull Board's clean of finished tasks leaves their keys the rest of their 24 h; a delayed task's clean frees its key", async () => {
    const { queue, agent } = await agentOfNewQueue(hub);
    const delayedKey = newKey();
    const delayed = await create(hub, {
      queue,
      payload: 1,
      delayMs: DAY_MS,
      idempotencyKey: delayedKey,
    });
    const [completedKey, failedKey, removedKey] = [newKey(), newKey(), newKey()];
    const batch = await api<{ tasks: Array<{ id: string }> }>(hub.url, 'POST', '/v1/tasks/batch', {
      tasks: [completedKey, failedKey, removedKey].map((idempotencyKey) => ({
        queue,
        payload: 1,
        idempotencyKey,
      })),
    });
    const [completed, failed, removed] = batch.body.tasks.map((t) => t.id);
    await endEach(agent, 1, 'complete');
    await endEach(agent, 2, 'fail');

    // one failed task removed from Bull Board (its "clean" of a job)
    expect((await boardCall(`${queue}/${removed}/clean`)).status).toBe(204);
    await expectKeptADay(hub, queue, removedKey, removed!);
    // Bull Board cleans the jobs that ended (or were created, for delayed ones) 5 s ago or more
    const jobGone = (id: string) => async () =>
      (await hub.redis.command.exists(hub.keys.bullJob(queue, id))) === 0 ? true : undefined;
    for (const [status, id] of [
      ['completed', completed],
      ['failed', failed],
      ['delayed', delayed.body.id],
    ] as const) {
      await eventually(
        async () => {
          expect((await boardCall(`${queue}/clean/${status}`)).status).toBe(200);
          return jobGone(id!)();
        },
        { what: `the ${status} task cleaned`, timeoutMs: 15_000, intervalMs: 500 },
      );
    }

    // kept through the removal: BullMQ's deleted the keys, and a repeat created the task again
    await expectKeptADay(hub, queue, completedKey, completed!);
    await expectKeptADay(hub, queue, failedKey, failed!);
    expect(await create(hub, { queue, payload: 2, idempotencyKey: completedKey })).toEqual({
      status: 200,
      body: { id: completed, state: 'completed', duplicate: true },
    });
    expect(await create(hub, { queue, payload: 2, idempotencyKey: removedKey })).toEqual({
      status: 200,
      body: { id: removed, state: 'failed', duplicate: true },
    });
    // a task removed before it ran frees its key, as in BullMQ: a repeat creates it anew
    expect(await ttlOf(hub, queue, delayedKey)).toBe(-2);
    expect((await create(hub, { queue, payload: 2, idempotencyKey: delayedKey })).status).toBe(201);
  });

  it("an operator's retry holds the key again until the task ends; a key another task took stays its", async () => {
    const { queue, agent, key, created } = await failedForGood();
    await expectKeptADay(hub, queue, key, created.body.id);

    agent.close(); // the retried task waits
    const retry = await api(hub.url, 'POST', `/v1/tasks/${created.body.id}/retry`);
    expect(retry).toMatchObject({ status: 200, body: { state: 'waiting' } });
    await expectHeld(hub, queue, key, created.body.id);
    expect(await create(hub, { queue, payload: 2, idempotencyKey: key })).toEqual({
      status: 200,
      body: { id: created.body.id, state: 'waiting', duplicate: true },
    });

    const rescuer = await register(hub, queue);
    const retriedMsg = await rescuer.nextAssignment();
    await rescuer.accept(retriedMsg);
    expect(await rescuer.complete(retriedMsg, 'second run')).toEqual({ ok: true });
    await expectKeptADay(hub, queue, key, created.body.id);

    // A failed task whose key was gone (24 h after its end) and taken by a new task: its retry
    // leaves the key to that task.
    const otherKey = newKey();
    const { created: first, msg: firstMsg } = await createAccepted(hub, rescuer, queue, otherKey);
    await rescuer.fail(firstMsg, { error: 'broken', retryable: false });
    expect(await hub.redis.command.del(hub.keys.bullDeduplication(queue, otherKey))).toBe(1);
    rescuer.close();
    const second = await create(hub, { queue, payload: 3, idempotencyKey: otherKey });
    expect(second.status).toBe(201);
    expect((await api(hub.url, 'POST', `/v1/tasks/${first.body.id}/retry`)).status).toBe(200);
    await expectHeld(hub, queue, otherKey, second.body.id);
  });

  it('24 h after a task the dispatcher failed: stalled too often, or cancelled while its agent was gone', async () => {
    const stalledQueue = newQueue();
    const vanishing = await register(stalling, stalledQueue);
    const key = newKey();
    const { created: stalled } = await createAccepted(stalling, vanishing, stalledQueue, key);
    vanishing.close();
    await register(stalling, stalledQueue); // the next claim fails the stalled task
    await eventually(
      async () => ((await stateOf(stalling, stalled.body.id)) === 'failed' ? true : undefined),
      { what: 'the stalled task to fail', timeoutMs: 20_000 },
    );
    await expectKeptADay(stalling, stalledQueue, key, stalled.body.id);

    const { queue, agent: gone } = await agentOfNewQueue(hub);
    const cancelledKey = newKey();
    const { created: running } = await createAccepted(hub, gone, queue, cancelledKey);
    gone.close();
    const cancel = await api(hub.url, 'POST', `/v1/tasks/${running.body.id}/cancel`);
    expect(cancel.status).toBe(202);
    // its lease runs out, the stalled checker puts it back to wait, the next claim cancels it
    const rescuer = await register(hub, queue);
    await eventually(
      async () => ((await stateOf(hub, running.body.id)) === 'cancelled' ? true : undefined),
      { what: 'the task to be cancelled at its next claim', timeoutMs: 20_000 },
    );
    expect(rescuer.assignments).toHaveLength(0);
    await expectKeptADay(hub, queue, cancelledKey, running.body.id);
  });

  it('a task BullMQ ended without the settle that follows (its replica died between) keeps its key', async () => {
    // a plain BullMQ worker on the hub's queue ends the job as BullMQ alone does: no settle
    // follows. A key without expiry (BullMQ's simple mode) was deleted there, and a repeat
    // created the task again.
    const queue = newQueue();
    const key = newKey();
    const created = await create(hub, { queue, payload: 1, idempotencyKey: key });
    expect(created.status).toBe(201);
    const connection = hub.redis.command.duplicate({ maxRetriesPerRequest: null });
    const worker = new Worker(queue, async () => 'done', {
      connection,
      prefix: hub.keys.bullPrefix,
    });
    try {
      await new Promise<void>((resolve) => worker.once('completed', () => resolve()));
    } finally {
      await worker.close();
      connection.disconnect();
    }
    expect(await holderOf(hub, queue, key)).toBe(created.body.id);
    expect(await create(hub, { queue, payload: 2, idempotencyKey: key })).toEqual({
      status: 200,
      body: { id: created.body.id, state: 'completed', duplicate: true },
    });
  });
});

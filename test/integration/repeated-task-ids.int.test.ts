import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { TaskView } from '@agentcom/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { api } from '../helpers/hub';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * A job id is unique in its queue only: a BullMQ producer that leaves the ids to BullMQ (or Bull
 * Board's "add job") gets 1, 2, ... in each queue. agentcom kept an operator's cancel request by
 * the id alone, so the cancel of a running job `1` of one queue (the request lives 7 days) also
 * cancelled the job `1` of another: failed as cancelled when a dispatch step fetched it, told to
 * stop by its heartbeats and by a reconnect, its own failure shown as a cancel.
 */
describe('task ids repeated across queues', () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  /** A new queue and a BullMQ producer adding straight to it (`add` returns the job's id). */
  async function withQueue(use: (queue: string, add: Add) => Promise<void>): Promise<void> {
    const queue = `repeated-${randomBytes(3).toString('hex')}`;
    const connection = new Redis(fixture.redis.url, { maxRetriesPerRequest: null });
    const producer = new Queue(queue, { connection, prefix: fixture.hub.keys.bullPrefix });
    const add: Add = async (payload, jobId) =>
      (await producer.add('task', { payload }, jobId ? { jobId } : {})).id ?? '';
    try {
      await use(queue, add);
    } finally {
      await producer.close();
      await connection.quit();
    }
  }
  /** Adds a job: its id BullMQ's own (1, 2, ... in each queue), or `jobId`. */
  type Add = (payload: unknown, jobId?: string) => Promise<string>;

  /** An agent of `queue`, closed after the test. */
  async function register(queue: string): Promise<TestAgent> {
    const agent = await TestAgent.register(fixture.hub.url, `agent-${queue}`, [queue]);
    agents.push(agent);
    return agent;
  }

  const getTask = (id: string, queue: string) =>
    api<TaskView>(fixture.hub.url, 'GET', `/v1/tasks/${id}?queue=${queue}`);

  /** An agent runs job `id` of `queue`, which an operator cancels: it reports the cancel. */
  async function cancelWhileRunning(queue: string, add: Add, id: string): Promise<void> {
    const agent = await register(queue);
    expect(await add({ from: queue }, id === '1' ? undefined : id)).toBe(id);
    const msg = await agent.assignmentOf(id);
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    const told = once(agent, 'cancel');
    const cancel = await api(fixture.hub.url, 'POST', `/v1/tasks/${id}/cancel?queue=${queue}`);
    expect(cancel.status).toBe(202);
    await told;
    const failure = { error: 'killed', retryable: false, kind: 'cancelled' } as const;
    expect(await agent.fail(msg, failure)).toEqual({ ok: true });
    expect((await getTask(id, queue)).body).toMatchObject({ state: 'cancelled', queue });
  }

  it("a cancel of one queue's running job 1 leaves the job 1 of another queue to run and fail as its own", async () => {
    await withQueue(async (cancelled, addCancelled) => {
      await cancelWhileRunning(cancelled, addCancelled, '1');

      await withQueue(async (queue, add) => {
        const agent = await register(queue);
        expect(await add({ from: queue })).toBe('1');
        // handed out (the old code failed it as cancelled at its fetch)
        const msg = await agent.assignmentOf('1');
        expect(msg.task.payload).toEqual({ from: queue });
        expect(await agent.accept(msg)).toMatchObject({ ok: true });

        // neither a heartbeat naming it nor a reconnect carries a cancel (a cancel is sent
        // before the heartbeat's answer)
        const held = { taskId: '1', token: msg.token };
        expect(await agent.send('agent:heartbeat', held)).toMatchObject({
          ok: true,
          state: 'working',
        });
        const back = await agent.reconnectTo(fixture.hub.url);
        agents.push(back);
        expect(await back.send('agent:heartbeat', held)).toMatchObject({
          ok: true,
          state: 'working',
        });
        expect([...agent.cancels, ...back.cancels]).toEqual([]);

        // its failure is its own, not the other queue's cancel
        expect(await back.fail(msg, { error: 'boom', retryable: false })).toEqual({ ok: true });
        expect((await getTask('1', queue)).body).toMatchObject({ state: 'failed', error: 'boom' });

        // a retry by its queue runs that queue's job again and clears nothing of the other's
        const retried = await api(fixture.hub.url, 'POST', `/v1/tasks/1/retry?queue=${queue}`);
        expect(retried).toMatchObject({ status: 200, body: { id: '1', state: 'waiting' } });
        const again = await back.assignmentOf('1');
        expect(again.token).not.toBe(msg.token);
        expect(await back.accept(again)).toMatchObject({ ok: true });
        expect(await back.complete(again, 'second')).toEqual({ ok: true });
        expect((await getTask('1', queue)).body).toMatchObject({ state: 'completed' });
        const otherRequest = fixture.hub.keys.cancelRequested(cancelled, '1');
        expect(await fixture.admin.exists(otherRequest)).toBe(1);
      });
      expect((await getTask('1', cancelled)).body).toMatchObject({ state: 'cancelled' });
    });
  });

  it("a cancel of one queue's running job does not stop the other queue's job of that id fetched step by step", async () => {
    // ids a producer names itself, the same in both queues (BullMQ counts its own ids on)
    const id = `job-${randomBytes(3).toString('hex')}`;
    await withQueue(async (cancelled, addCancelled) => {
      await cancelWhileRunning(cancelled, addCancelled, id);

      await withQueue(async (queue, add) => {
        // first in line, a task whose cancel was asked while it ran: the dispatch step leaves it
        // to the dispatcher, which fails it and fetches the jobs behind it one by one
        const created = await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', {
          queue,
          payload: { n: 0 },
        });
        expect(created.status).toBe(201);
        const first = created.body.id;
        await fixture.admin.set(fixture.hub.keys.cancelRequested(queue, first), 'stop');
        expect(await add({ from: queue }, id)).toBe(id);

        const agent = await register(queue);
        const msg = await agent.assignmentOf(id);
        expect(msg.task.payload).toEqual({ from: queue });
        expect(await agent.accept(msg)).toMatchObject({ ok: true });
        expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
        expect(agent.assignments.map((a) => a.task.id)).toEqual([id]);
        expect((await getTask(id, queue)).body).toMatchObject({ state: 'completed' });
        expect((await getTask(first, queue)).body).toMatchObject({ state: 'cancelled' });
      });
    });
  });

  it('the routes of one task take its queue: each queue shows, cancels and retries its own', async () => {
    const id = `job-${randomBytes(3).toString('hex')}`;
    await withQueue(async (a, addA) => {
      await withQueue(async (b, addB) => {
        // no agent serves either: both wait
        expect(await addA({ from: a }, id)).toBe(id);
        expect(await addB({ from: b }, id)).toBe(id);
        for (const queue of [a, b]) {
          expect((await getTask(id, queue)).body).toMatchObject({
            id,
            queue,
            state: 'waiting',
            payload: { from: queue },
          });
        }
        // without a queue: the task of one of them
        const either = await api<TaskView>(fixture.hub.url, 'GET', `/v1/tasks/${id}`);
        expect([a, b]).toContain(either.body.queue);

        // each is cancelled before it ran, with a record of its own
        for (const queue of [a, b]) {
          const path = `/v1/tasks/${id}/cancel?queue=${queue}`;
          const cancel = await api(fixture.hub.url, 'POST', path, { reason: `stop ${queue}` });
          expect(cancel).toMatchObject({ status: 200, body: { id, state: 'cancelled' } });
        }
        for (const queue of [a, b]) {
          expect((await getTask(id, queue)).body).toMatchObject({
            queue,
            state: 'cancelled',
            payload: { from: queue },
            error: `stop ${queue}`,
          });
          const logs = await api(fixture.hub.url, 'GET', `/v1/tasks/${id}/logs?queue=${queue}`);
          expect(logs).toMatchObject({ status: 200, body: { logs: [], count: 0 } });
          const retry = await api<{ error: { code: string } }>(
            fixture.hub.url,
            'POST',
            `/v1/tasks/${id}/retry?queue=${queue}`,
          );
          expect(retry).toMatchObject({
            status: 409,
            body: { error: { code: 'E_INVALID_STATE' } },
          });
        }
        // a queue that holds no such task
        const none = await getTask(id, `none-${randomBytes(3).toString('hex')}`);
        expect(none.status).toBe(404);
      });
    });
  });

  it('refuses a query the routes of one task do not take', async () => {
    const paths = ['/v1/tasks/x', '/v1/tasks/x/logs', '/v1/tasks/x/cancel', '/v1/tasks/x/retry'];
    for (const path of paths) {
      const method = path.endsWith('cancel') || path.endsWith('retry') ? 'POST' : 'GET';
      for (const query of ['queue=a:b', 'queue=', 'other=1']) {
        const answer = await api<{ error: { code: string; message: string } }>(
          fixture.hub.url,
          method,
          `${path}?${query}`,
        );
        expect({ path, query, status: answer.status, code: answer.body.error.code }).toEqual({
          path,
          query,
          status: 400,
          code: 'E_VALIDATION',
        });
      }
    }
  });
});

import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { api, eventually } from '../helpers/hub';
import { readTransitions } from '../helpers/invariants';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * Jobs whose data is no task's, in a task queue: written by anything but the task API (a BullMQ
 * producer adding straight to the queue, Bull Board's "add job" or "edit data"). Each dispatch
 * step that fetched one threw, the job came back first in line at each ack timeout, and the
 * queue's other tasks waited for good; `GET /v1/tasks?queue=` answered 500.
 */
describe('jobs of a task queue whose data is no task’s', () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  /**
   * A new queue and a BullMQ producer adding jobs straight to it (`add` returns the job's id),
   * closed after `use`. Its job ids are unique: BullMQ's own (1, 2, ...) count per queue, and
   * `GET /v1/tasks/:id` looks an id up in every queue (the API's task ids are UUIDs).
   */
  async function withProducer(
    use: (queue: string, add: (data: unknown) => Promise<string>) => Promise<void>,
  ) {
    const queue = `foreign-${randomBytes(3).toString('hex')}`;
    const connection = new Redis(fixture.redis.url, { maxRetriesPerRequest: null });
    const producer = new Queue(queue, { connection, prefix: fixture.hub.keys.bullPrefix });
    const add = async (data: unknown) => {
      const jobId = `foreign-${randomBytes(6).toString('hex')}`;
      expect((await producer.add('x', data, { jobId })).id).toBe(jobId);
      return jobId;
    };
    try {
      await use(queue, add);
    } finally {
      await producer.close();
      await connection.quit();
    }
  }

  const createTask = async (queue: string): Promise<string> => {
    const created = await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: { n: 1 },
    });
    expect(created.status).toBe(201);
    return created.body.id;
  };

  /** An agent of `queue`, closed after the test. */
  async function register(queue: string, agentId: string): Promise<TestAgent> {
    const agent = await TestAgent.register(fixture.hub.url, agentId, [queue]);
    agents.push(agent);
    return agent;
  }

  /** An agent of `queue` runs the one task it is pushed, which must be `id`. */
  async function runsOnly(queue: string, id: string): Promise<void> {
    const agent = await register(queue, `foreign-${randomBytes(3).toString('hex')}`);
    const msg = await agent.nextAssignment();
    expect(msg.task).toMatchObject({ id, payload: { n: 1 } });
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
    // none of the others was pushed, and none held the agent up (an ack timeout each, before)
    expect(agent.assignments.map((a) => a.task.id)).toEqual([id]);
    const { redis, hub } = fixture;
    const transitions = await readTransitions(redis.url, hub.config.prefix);
    const reasons = transitions.filter((t) => t.agent === agent.agentId).map((t) => t.reason);
    expect(reasons).not.toContain('ack_timeout');
  }

  /** The task ended for good (`failed`, or `cancelled`), with no attempt run, saying why. */
  async function endedAs(id: string, state: TaskView['state'], why: RegExp): Promise<void> {
    const view = await api<TaskView>(fixture.hub.url, 'GET', `/v1/tasks/${id}`);
    expect(view.body).toMatchObject({ state });
    expect(view.body.error).toMatch(why);
  }

  it('are failed for good at their first fetch, and the queue’s tasks behind them run', async () => {
    await withProducer(async (queue, add) => {
      const foreign = [
        await add(null),
        await add('a string'),
        await add({ payload: 1, labels: { team: 5 } }),
      ];
      const id = await createTask(queue);

      // every job is listed, the foreign ones with their data as the payload
      const listed = await api<{ tasks: TaskView[] }>(
        fixture.hub.url,
        'GET',
        `/v1/tasks?queue=${queue}`,
      );
      expect(listed.status).toBe(200);
      expect(listed.body.tasks.map((task) => task.id).sort()).toEqual([...foreign, id].sort());

      await runsOnly(queue, id);
      for (const foreignId of foreign) {
        await endedAs(foreignId, 'failed', /^not a task: its (data is|labels are)/);
      }
    });
  });

  it('are failed for good on the step-by-step path too (after a job the claim could not hand out)', async () => {
    await withProducer(async (queue, add) => {
      // first in line: a task whose cancel was asked while it ran (the claim's script leaves it to
      // the dispatcher, which then fetches the next jobs one by one)
      const cancelled = await createTask(queue);
      await fixture.admin.set(
        fixture.hub.keys.cancelRequested(queue, cancelled),
        'stop',
        'PX',
        60_000,
      );
      const foreign = await add(null);
      const id = await createTask(queue);

      await runsOnly(queue, id);
      await endedAs(cancelled, 'cancelled', /stop/);
      await endedAs(foreign, 'failed', /^not a task: its data is null/);
    });
  });
  it('leave the agent claimed for one in its place in the longest-idle line', async () => {
    await withProducer(async (queue, add) => {
      const { hub, admin } = fixture;
      const idleKey = hub.keys.idle(queue);
      const suffix = randomBytes(3).toString('hex');
      // `a` idle longest (ids in the same order, should both come in the same millisecond)
      const a = await register(queue, `a-${suffix}`);
      const b = await register(queue, `b-${suffix}`);
      const aSince = Number(await admin.zscore(idleKey, a.agentId));
      expect(aSince).toBeLessThanOrEqual(Number(await admin.zscore(idleKey, b.agentId)));

      // `a` is claimed for the job that is no task's, which is failed; `a` is freed
      const foreign = await add(null);
      await eventually(
        async () =>
          (await readTransitions(fixture.redis.url, hub.config.prefix)).some(
            (t) => t.agent === a.agentId && t.reason === 'release',
          ) || undefined,
        { what: "a's release after the job that is no task's" },
      );
      await endedAs(foreign, 'failed', /^not a task/);
      expect(Number(await admin.zscore(idleKey, a.agentId))).toBe(aSince);

      // the next task goes to `a`, idle longest still
      const next = a.nextAssignment();
      const id = await createTask(queue);
      expect((await next).task.id).toBe(id);
      expect(b.assignments).toEqual([]);
    });
  });
});

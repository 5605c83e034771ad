import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { api } from '../helpers/hub';
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

  it('are failed for good at their first fetch, and the queue’s tasks behind them run', async () => {
    const { hub } = fixture;
    const queue = `foreign-${randomBytes(3).toString('hex')}`;
    const connection = new Redis(fixture.redis.url, { maxRetriesPerRequest: null });
    const producer = new Queue(queue, { connection, prefix: hub.keys.bullPrefix });
    try {
      const foreign = [
        await producer.add('x', null),
        await producer.add('x', 'a string'),
        await producer.add('x', { payload: 1, labels: { team: 5 } }),
      ].map((job) => job.id ?? '');
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue,
        payload: { n: 1 },
      });
      expect(created.status).toBe(201);

      // every job is listed, the foreign ones with their data as the payload
      const listed = await api<{ tasks: TaskView[] }>(hub.url, 'GET', `/v1/tasks?queue=${queue}`);
      expect(listed.status).toBe(200);
      expect(listed.body.tasks.map((task) => task.id).sort()).toEqual(
        [...foreign, created.body.id].sort(),
      );

      const agent = await TestAgent.register(hub.url, `foreign-${randomBytes(3).toString('hex')}`, [
        queue,
      ]);
      agents.push(agent);
      const msg = await agent.nextAssignment();
      expect(msg.task).toMatchObject({ id: created.body.id, payload: { n: 1 } });
      expect(await agent.accept(msg)).toMatchObject({ ok: true });
      expect(await agent.complete(msg, 'done')).toEqual({ ok: true });

      // the foreign jobs failed for good, without an attempt run by any agent, and say why
      for (const id of foreign) {
        const view = await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`);
        expect(view.body).toMatchObject({ state: 'failed' });
        expect(view.body.error).toMatch(/^not a task: its (data is|labels are)/);
      }
      // none was pushed: the one push was the task's
      expect(agent.assignments.map((a) => a.task.id)).toEqual([created.body.id]);
    } finally {
      await producer.close();
      await connection.quit();
    }
  });
});

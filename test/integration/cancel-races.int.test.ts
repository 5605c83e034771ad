import { randomBytes } from 'node:crypto';
import type { TaskAssign, TaskView } from '@agentcom/shared';
import type { TaskJob } from '../../hub/src/queues/queue-registry';
import { IdempotencyKeys } from '../../hub/src/tasks/idempotency-keys';
import { TaskCancellation } from '../../hub/src/tasks/task-cancellation';
import { api } from '../helpers/hub';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/**
 * A cancel against a task that finishes while the cancel is under way, and the idempotency key
 * of a task cancelled before it ran. The race is driven step by step: the test loads the job as
 * the cancel does (`findJob`), sees it waiting, lets a real agent run it to its end, then lets
 * the cancel take effect (`cancelJob`).
 */
describe('cancel races and the idempotency key of a cancelled task', () => {
  const fixture = useTestHub();
  const { agents } = fixture;
  let hub: TestHub;
  let cancellation: TaskCancellation;

  beforeAll(() => {
    ({ hub } = fixture);
    // the cancel the HTTP route runs, built as the hub builds it, so the test can drive its steps
    cancellation = new TaskCancellation({
      redis: hub.redis.command,
      keys: hub.keys,
      tasks: hub.tasks,
      notifier: hub.gateway,
      idempotency: new IdempotencyKeys({ redis: hub.redis.command, keys: hub.keys }),
    });
  });

  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const getTask = async (id: string) => api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`);
  const cancelOverHttp = (id: string) => api(hub.url, 'POST', `/v1/tasks/${id}/cancel`);

  /** A waiting task of a queue nobody serves yet, loaded as the cancel loads it. */
  const loadedWaitingTask = async (task: Record<string, unknown> = {}) => {
    const queue = newQueue();
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: 1,
      ...task,
    });
    expect(created.status).toBe(201);
    const job = (await hub.tasks.findJob(created.body.id)) as TaskJob;
    expect(await job.getState()).toBe('waiting');
    return { queue, id: created.body.id, job };
  };

  /** A new agent of `queue` that accepted the task it was assigned on connecting. */
  const agentRunning = async (queue: string): Promise<{ agent: TestAgent; msg: TaskAssign }> => {
    const agentId = `agent-${randomBytes(4).toString('hex')}`;
    const registered = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', { agentId });
    const agent = new TestAgent(hub.url, agentId, registered.body.token, [queue]);
    agents.push(agent);
    const assigned = agent.nextAssignment(); // listening before connecting: it follows the connect
    await agent.connect();
    const msg = await assigned;
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    return { agent, msg };
  };

  it('leaves a task that completed after the cancel loaded it completed, and answers 409 E_INVALID_STATE', async () => {
    const { queue, id, job } = await loadedWaitingTask();
    const { agent, msg } = await agentRunning(queue);
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });

    await expect(cancellation.cancelJob(job, 'too late')).rejects.toMatchObject({
      code: 'E_INVALID_STATE',
    });
    expect(await getTask(id)).toMatchObject({
      status: 200,
      body: { state: 'completed', result: 'done' },
    });
    expect(await cancelOverHttp(id)).toMatchObject({
      status: 409,
      body: { error: { code: 'E_INVALID_STATE' } },
    });
  });

  it('leaves a task that failed for good after the cancel loaded it failed', async () => {
    const { queue, id, job } = await loadedWaitingTask({ attempts: 1 });
    const { agent, msg } = await agentRunning(queue);
    const failed = await agent.fail(msg, { error: 'broken', retryable: false });
    expect(failed).toEqual({ ok: true });

    await expect(cancellation.cancelJob(job, 'too late')).rejects.toMatchObject({
      code: 'E_INVALID_STATE',
    });
    expect(await getTask(id)).toMatchObject({
      status: 200,
      body: { state: 'failed', error: 'broken' },
    });
  });

  it('cancels a task fetched after the cancel loaded it as a running task: its agent is told to stop', async () => {
    const { queue, id, job } = await loadedWaitingTask();
    const { agent } = await agentRunning(queue);
    const told = withTimeout(
      new Promise<unknown>((resolve) => agent.once('cancel', resolve)),
      10_000,
      'task:cancel',
    );

    expect(await cancellation.cancelJob(job, 'stop it')).toEqual({
      id,
      state: 'running',
      cancelRequested: true,
    });
    expect(await told).toEqual({ taskId: id, reason: 'cancelled' });
    expect((await getTask(id)).body.state).toBe('running');
  });

  it('answers a cancel whose job another cancel removed after it was loaded: cancelled', async () => {
    const { id, job } = await loadedWaitingTask();
    expect(await cancellation.cancelJob(job, 'first')).toEqual({ id, state: 'cancelled' });
    expect(await cancellation.cancelJob(job, 'second')).toEqual({ id, state: 'cancelled' });
    expect((await getTask(id)).body).toMatchObject({ state: 'cancelled', error: 'first' });
  });

  it('keeps the idempotency key of a task cancelled before it ran: a repeated create answers it, cancelled', async () => {
    const queue = newQueue();
    for (const [key, task] of [
      ['k-waiting', {}],
      ['k-delayed', { delayMs: 60_000 }],
    ] as const) {
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue,
        payload: key,
        idempotencyKey: key,
        ...task,
      });
      expect(created.status).toBe(201);
      expect(await cancelOverHttp(created.body.id)).toMatchObject({ status: 200 });

      const again = { queue, payload: 'again', idempotencyKey: key };
      expect(await api(hub.url, 'POST', '/v1/tasks', again)).toEqual({
        status: 200,
        body: { id: created.body.id, state: 'cancelled', duplicate: true },
      });
      expect(await api(hub.url, 'POST', '/v1/tasks/batch', { tasks: [again] })).toEqual({
        status: 200,
        body: { tasks: [{ id: created.body.id, state: 'cancelled', duplicate: true }] },
      });
      expect((await getTask(created.body.id)).body).toMatchObject({
        state: 'cancelled',
        payload: key,
      });
    }
    // nothing was created again
    const listed = await api<{ tasks: unknown[] }>(hub.url, 'GET', `/v1/tasks?queue=${queue}`);
    expect(listed.body.tasks).toEqual([]);
  });
});

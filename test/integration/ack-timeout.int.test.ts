import { randomBytes } from 'node:crypto';
import type { TaskAssign, TaskView } from '@agentcom/shared';
import { api, eventually, startTestHub } from '../helpers/hub';
import { readTransitions } from '../helpers/invariants';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { TestAgent } from '../helpers/test-agent';

const ACK_TIMEOUT_MS = 1000;

/**
 * An agent that is connected but never accepts its `task:assign` (a hung or broken sidecar):
 * after the ack timeout it rests in `cooldown` for a while, so the task goes to a healthy agent
 * instead of being pushed to the silent one again and again. Real Redis, real hubs and sockets.
 */
describe('an agent that does not accept its task in time', () => {
  const fixture = useHubsFixture();
  const { hubs, agents } = fixture;

  const startHub = async (env: Record<string, string>) => {
    const hub = await startTestHub(fixture.redis.url, {
      ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS),
      SWEEP_MS: '100',
      ...env,
    });
    hubs.push(hub);
    return hub;
  };
  const register = async (hubUrl: string, queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(hubUrl, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return agent;
  };
  const createTask = async (hubUrl: string, body: Record<string, unknown>): Promise<string> => {
    const created = await api<{ id: string }>(hubUrl, 'POST', '/v1/tasks', body);
    expect(created.status).toBe(201);
    return created.body.id;
  };
  const getTask = async (hubUrl: string, id: string): Promise<TaskView> =>
    (await api<TaskView>(hubUrl, 'GET', `/v1/tasks/${id}`)).body;

  it('rests in cooldown, and a healthy agent connected later gets the task meanwhile', async () => {
    // Two replicas. Only A sweeps (B's sweep runs once at start), so A finds the ack timeout
    // and A's dispatch step runs next: a step prefers an agent connected to its own replica,
    // and the silent agent is A's, the healthy one B's.
    const prefix = `k${randomBytes(3).toString('hex')}`;
    const hubA = await startHub({ AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-a' });
    const hubB = await startHub({ AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-b', SWEEP_MS: '60000' });
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const silent = await register(hubA.url, queue);
    const first = silent.nextAssignment();
    const id = await createTask(hubA.url, { queue, payload: {} });
    expect((await first).task.id).toBe(id);

    const healthy = await register(hubB.url, queue);
    // one ack timeout, then a sweep and a dispatch step (a bound with room for a loaded machine)
    const msg = await healthy.nextAssignment(4 * ACK_TIMEOUT_MS).catch((err: Error) => {
      throw new Error(`${err.message}; the silent agent got it ${silent.assignments.length} times`);
    });
    expect(msg).toMatchObject({ task: { id }, attempt: 1 });
    expect(silent.assignments.map((a) => a.task.id)).toEqual([id]);
    await eventually(() => (silent.cancels.length > 0 ? true : undefined), {
      what: 'the silent agent told its task is superseded',
    });
    expect(silent.cancels).toEqual([{ taskId: id, reason: 'superseded' }]);
    const timedOut = (await readTransitions(fixture.redis.url, prefix)).filter(
      (event) => event.agent === silent.agentId && event.reason === 'ack_timeout',
    );
    expect(timedOut).toMatchObject([{ from: 'assigned', to: 'cooldown', task: id }]);

    expect(await healthy.accept(msg)).toMatchObject({ ok: true });
    expect(await healthy.complete(msg, 'ok')).toEqual({ ok: true });
    expect(await getTask(hubA.url, id)).toMatchObject({
      state: 'completed',
      agentId: healthy.agentId,
      attempt: 1,
      attemptsMade: 1,
    });

    // the cooldown ends: the silent agent is idle again
    await eventually(
      async () => ((await hubA.agents.get(silent.agentId))?.state === 'idle' ? true : undefined),
      { what: 'the silent agent idle again', timeoutMs: 5 * ACK_TIMEOUT_MS },
    );
  });

  it('counts no attempt in the task view for an ack timeout, as task:assign does', async () => {
    const hub = await startHub({});
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const silent = await register(hub.url, queue);
    const pushes: TaskAssign[] = [];
    const twice = new Promise<void>((resolve) => {
      silent.on('assign', (msg: TaskAssign) => {
        pushes.push(msg);
        if (pushes.length === 2) resolve();
      });
    });
    const id = await createTask(hub.url, { queue, payload: {}, attempts: 3 });
    // alone in its queue, the silent agent gets the task again once its cooldown ends
    await twice;
    expect(pushes.map((p) => [p.task.id, p.attempt])).toEqual([
      [id, 1],
      [id, 1],
    ]);
    expect(await getTask(hub.url, id)).toMatchObject({
      state: 'assigned',
      agentId: silent.agentId,
      attempt: 1,
      attempts: 3,
      attemptsMade: 0,
    });
    const msg = pushes[1]!;
    expect(await silent.accept(msg)).toMatchObject({ ok: true });
    expect(await getTask(hub.url, id)).toMatchObject({ state: 'running', attempt: 1 });
    expect(await silent.complete(msg, 'done')).toEqual({ ok: true });
    expect(await getTask(hub.url, id)).toMatchObject({ state: 'completed', attempt: 1 });
  });
});

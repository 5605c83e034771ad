import { randomBytes } from 'node:crypto';
import type { AgentView, TaskAssign, TaskView } from '@agentcom/shared';
import { api, eventually } from '../helpers/hub';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

describe('cancel and run timeout (hub side, protocol-level agents)', () => {
  const fixture = useTestHub({
    hubIds: ['hub-a', 'hub-b'],
    env: { RUN_TIMEOUT_GRACE_MS: '800' },
  });
  const { agents } = fixture;
  let hubA: TestHub;
  let hubB: TestHub;
  beforeAll(() => ([hubA, hubB] = fixture.hubs));

  const newQueue = (): string => `q-${randomBytes(4).toString('hex')}`;
  const register = async (hubUrl: string, queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(hubUrl, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return agent;
  };
  /**
   * A new agent (of a new queue, on hub A) that accepted the task created through `createOn`
   * with `task` as its options; `id` is the task's, as the POST answered it.
   */
  const runningTask = async (task: Record<string, unknown> = {}, createOn = hubA.url) => {
    const queue = newQueue();
    const agent = await register(hubA.url, queue);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(createOn, 'POST', '/v1/tasks', {
      queue,
      payload: 1,
      ...task,
    });
    const msg = await assigned;
    expect((await agent.accept(msg)).ok).toBe(true);
    return { queue, agent, msg, id: created.body.id };
  };
  /**
   * The agent reports its killed handler's exit, an ordinary retryable failure: the task still
   * ends cancelled, after one attempt.
   */
  const reportKilledThenCancelled = async (agent: TestAgent, msg: TaskAssign, id: string) => {
    const ack = await agent.fail(msg, { error: 'killed by SIGTERM', retryable: true });
    expect(ack).toEqual({ ok: true });
    expect(await getTask(id)).toMatchObject({ state: 'cancelled', attemptsMade: 1 });
  };
  const getTask = async (id: string) =>
    (await api<TaskView>(hubA.url, 'GET', `/v1/tasks/${id}`)).body;
  const nextCancel = (agent: TestAgent) =>
    withTimeout(
      new Promise<unknown>((resolve) => agent.once('cancel', resolve)),
      10_000,
      'task:cancel',
    );

  it('removes a waiting task at once and shows it cancelled; a second cancel is idempotent', async () => {
    const created = await api<{ id: string }>(hubA.url, 'POST', '/v1/tasks', {
      queue: newQueue(),
      payload: { x: 1 },
    });
    const cancelled = await api(hubB.url, 'POST', `/v1/tasks/${created.body.id}/cancel`, {
      reason: 'not needed',
    });
    expect(cancelled).toEqual({ status: 200, body: { id: created.body.id, state: 'cancelled' } });
    expect(await getTask(created.body.id)).toMatchObject({
      state: 'cancelled',
      error: 'not needed',
      payload: { x: 1 },
    });
    expect((await api(hubA.url, 'POST', `/v1/tasks/${created.body.id}/cancel`)).status).toBe(200);
  });

  it('removes a delayed task', async () => {
    const created = await api<{ id: string }>(hubA.url, 'POST', '/v1/tasks', {
      payload: 1,
      delayMs: 60_000,
    });
    expect((await api(hubA.url, 'POST', `/v1/tasks/${created.body.id}/cancel`)).status).toBe(200);
    expect((await getTask(created.body.id)).state).toBe('cancelled');
  });

  it('refuses to cancel a completed task and a task that does not exist', async () => {
    const { agent, msg, id } = await runningTask();
    await agent.complete(msg, 'done');
    const refused = await api(hubB.url, 'POST', `/v1/tasks/${id}/cancel`);
    expect(refused).toMatchObject({ status: 409, body: { error: { code: 'E_INVALID_STATE' } } });
    expect((await api(hubB.url, 'POST', '/v1/tasks/nope/cancel')).status).toBe(404);
    expect((await api(hubB.url, 'POST', `/v1/tasks/${id}/cancel`, { bogus: 1 })).status).toBe(400);
  });

  it('tells the agent of a running task to stop, wherever it is connected, and fails the task as cancelled without retry', async () => {
    const { agent, msg, id } = await runningTask({ attempts: 3 });
    const cancel = nextCancel(agent);
    const response = await api(hubB.url, 'POST', `/v1/tasks/${id}/cancel`);
    expect(response).toMatchObject({
      status: 202,
      body: { cancelRequested: true, state: 'running' },
    });
    expect(await cancel).toEqual({ taskId: id, reason: 'cancelled' });
    await reportKilledThenCancelled(agent, msg, id);
    const view = await api<{ state: string }>(hubA.url, 'GET', `/v1/agents/${agent.agentId}`);
    expect(view.body.state).toBe('idle');
  });

  it('tells an agent that resumes a task cancelled while it had no connection to stop: the task ends cancelled, not completed', async () => {
    const { queue, agent, msg, id } = await runningTask({ attempts: 3 });
    agent.close();
    await eventually(
      async () =>
        (await api<AgentView>(hubA.url, 'GET', `/v1/agents/${agent.agentId}`)).body
          .disconnectedAt !== undefined || undefined,
      { what: 'the disconnect to be recorded' },
    );
    // nobody is in the agent's room: this task:cancel is lost
    expect(await api(hubB.url, 'POST', `/v1/tasks/${id}/cancel`)).toMatchObject({
      status: 202,
      body: { cancelRequested: true },
    });

    const back = new TestAgent(hubB.url, agent.agentId, agent.token, [queue]);
    agents.push(back);
    back.current = { taskId: msg.task.id, token: msg.token, state: 'working' };
    const cancel = nextCancel(back); // listening before connecting: it follows the connect
    await back.connect();
    expect(await cancel).toEqual({ taskId: id, reason: 'cancelled' });
    expect(
      (await api<AgentView>(hubB.url, 'GET', `/v1/agents/${agent.agentId}`)).body,
    ).toMatchObject({ state: 'working', currentTask: { taskId: id } });

    const ack = await back.fail(msg, { error: 'cancelled', retryable: false, kind: 'cancelled' });
    expect(ack).toEqual({ ok: true });
    expect(await getTask(id)).toMatchObject({ state: 'cancelled', attemptsMade: 1 });
  });

  it('sends a pending cancel again with a heartbeat that names the task (a task:cancel that came before its task:assign is dropped by the sidecar)', async () => {
    const { agent, msg, id } = await runningTask({ attempts: 3 });
    const first = nextCancel(agent);
    expect((await api(hubB.url, 'POST', `/v1/tasks/${id}/cancel`)).status).toBe(202);
    await first; // say the agent dropped it
    // a heartbeat that names no task carries nothing (an emit would precede its ack)
    expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'working' });
    expect(agent.cancels).toHaveLength(1);

    const again = nextCancel(agent);
    const beat = await agent.send('agent:heartbeat', { taskId: msg.task.id, token: msg.token });
    expect(beat).toMatchObject({ ok: true, state: 'working' });
    expect(beat).not.toHaveProperty('abort');
    expect(await again).toEqual({ taskId: id, reason: 'cancelled' });
    expect(agent.cancels).toHaveLength(2);

    await reportKilledThenCancelled(agent, msg, id);
    // once the task is reported, its heartbeats carry no cancel
    expect(
      await agent.send('agent:heartbeat', { taskId: msg.task.id, token: msg.token }),
    ).toMatchObject({ ok: true, abort: true });
    expect(agent.cancels).toHaveLength(2);
  });

  it("takes a completion reported after the timeout's cancel, within the grace: the handler had finished", async () => {
    const { agent, msg, id } = await runningTask({ timeoutMs: 300, attempts: 2 });
    expect(await nextCancel(agent)).toEqual({ taskId: id, reason: 'timeout', token: msg.token });
    expect(await agent.complete(msg, 'just in time')).toEqual({ ok: true });
    expect(await getTask(id)).toMatchObject({
      state: 'completed',
      result: 'just in time',
    });
    // released: the grace's backstop has no attempt left to fail
    const record = await hubA.agents.get(agent.agentId);
    expect(record).toMatchObject({ state: 'idle' });
    expect(record?.taskId).toBeUndefined();
  });

  it('tells the agent when a task runs past its timeout, then fails the attempt itself if no report comes', async () => {
    const queue = newQueue();
    const silent = await register(hubA.url, queue);
    const assigned = silent.nextAssignment();
    const created = await api<{ id: string }>(hubB.url, 'POST', '/v1/tasks', {
      queue,
      payload: 1,
      timeoutMs: 300,
      attempts: 2,
    });
    const msg = await assigned;
    expect(msg.timeoutMs).toBe(300);
    await silent.accept(msg);
    expect(await nextCancel(silent)).toEqual({
      taskId: created.body.id,
      reason: 'timeout',
      token: msg.token,
    });
    const retried = await silent.nextAssignment(10_000);
    expect(retried).toMatchObject({ task: { id: created.body.id }, attempt: 2 });
    const first = await eventually(async () => {
      const task = await getTask(created.body.id);
      return task.attemptsMade === 1 ? task : undefined;
    });
    expect(first.error).toMatch(/timed out after 300 ms/);
    // the late report of the first attempt finds it already failed for that token: a no-op
    const late = await silent.fail(msg, { error: 'timeout', retryable: true, kind: 'timeout' });
    expect(late).toEqual({ ok: true, duplicate: true });
    expect((await getTask(created.body.id)).attemptsMade).toBe(1);
    await silent.accept(retried);
    expect(await silent.complete(retried, 'second time lucky')).toEqual({ ok: true });
    expect(await getTask(created.body.id)).toMatchObject({
      state: 'completed',
      result: 'second time lucky',
    });
  });
});

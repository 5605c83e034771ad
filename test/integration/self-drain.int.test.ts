import type { AgentView, TaskView } from '@agentcom/shared';
import { AgentControl } from '../../hub/src/agents/agent-control';
import { hashToken } from '../../hub/src/auth/tokens';
import { api, eventually } from '../helpers/hub';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * An agent's own drain or resume (`agent:drain`, `agent:resume`, sent by a stopping or started
 * sidecar) applies to the connection that asked. A replica that handled a drain late (its Redis
 * link stalled) found the agent connected again, on another replica, through a new sidecar: the
 * stopped sidecar's drain left the new connection `draining`, taking no task until its next
 * reconnect. The late event is played here through the replica's `AgentControl` with the old
 * connection's id, as the gateway passes it; the agent's live connection goes through the
 * gateway itself.
 */
describe("an agent's own drain applies to the connection that asked", () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  it('a drain or resume from a connection the agent left changes nothing', async () => {
    const { hub } = fixture;
    const agentId = 'self-drain';
    const stopped = await TestAgent.register(hub.url, agentId);
    // the old connection as the gateway names it: its socket, and the token it authenticated with
    const stale = { socketId: stopped.socket.id!, tokenHash: hashToken(stopped.token) };
    const live = await stopped.reconnectTo(hub.url);
    agents.push(stopped, live);
    await eventually(
      async () => ((await hub.agents.get(agentId))?.socketId === live.socket.id ? true : undefined),
      { what: 'the record to name the new connection' },
    );
    const control = new AgentControl(
      hub.agents,
      () => undefined,
      hub.gateway,
      async () => undefined,
    );

    expect(await control.drain(agentId, stale)).toBe('idle');
    expect((await hub.agents.get(agentId))?.state).toBe('idle');

    // the live connection's own drain applies, and a late resume of the old one leaves it
    expect(await live.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    expect(await control.undrain(agentId, stale)).toBe('draining');
    expect((await hub.agents.get(agentId))?.state).toBe('draining');
    expect(await live.send('agent:resume', {})).toEqual({ ok: true, state: 'idle' });
  });
});

/**
 * A task the hub pushes (`task:assign`) as the sidecar drains itself (`agent:drain`, SIGTERM) is
 * never taken: the draining sidecar accepts nothing more. The hub's record stayed `assigned` and
 * the task waited out the ack timeout (then the agent rested in cooldown). The race is played
 * here in its order: the agent receives the push and, instead of accepting, drains itself.
 */
describe("an agent's own drain gives back the task it was pushed and did not accept", () => {
  // long enough that only a give-back, not the ack timeout, can free the task within the test
  const ACK_TIMEOUT_MS = 30_000;
  const fixture = useTestHub({
    env: { ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS), LEASE_MS: '60000' },
  });
  const { agents } = fixture;

  const register = async (agentId: string, queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(fixture.hub.url, agentId, [queue]);
    agents.push(agent);
    return agent;
  };
  const createTask = async (queue: string): Promise<string> => {
    const created = await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
    });
    expect(created.status).toBe(201);
    return created.body.id;
  };
  const task = async (id: string): Promise<TaskView> =>
    (await api<TaskView>(fixture.hub.url, 'GET', `/v1/tasks/${id}`)).body;
  const agentView = async (agentId: string): Promise<AgentView> =>
    (await api<AgentView>(fixture.hub.url, 'GET', `/v1/agents/${agentId}`)).body;

  it('puts the task back to wait before the drain answers, no attempt used, for another agent', async () => {
    const { hub } = fixture;
    const queue = 'give-back';
    const stopping = await register('stopping', queue);
    const id = await createTask(queue);
    const pushed = await stopping.assignmentOf(id);

    const drainedAt = performance.now();
    expect(await stopping.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    // when the drain answers: the task waits, its attempt not used, the agent holds nothing
    expect(await task(id)).toMatchObject({ state: 'waiting', attemptsMade: 0 });
    const record = await hub.agents.get('stopping');
    expect(record).toMatchObject({ state: 'draining', drainedBySelf: true });
    expect(record?.taskId).toBeUndefined();
    expect(record?.token).toBeUndefined();
    expect((await agentView('stopping')).currentTask).toBeUndefined();
    // an accept sent after all (it raced the drain) is refused: the task is no longer its own
    expect(await stopping.accept(pushed)).toMatchObject({
      ok: false,
      code: 'E_ASSIGNMENT_SUPERSEDED',
    });

    const other = await register('other', queue);
    const again = await other.nextAssignment();
    const waitedMs = performance.now() - drainedAt;
    expect(again).toMatchObject({ task: { id }, attempt: 1 });
    expect(waitedMs).toBeLessThan(ACK_TIMEOUT_MS / 3);
    expect(await other.accept(again)).toMatchObject({ ok: true });
    expect(await other.complete(again, 'done')).toEqual({ ok: true });
    expect(await task(id)).toMatchObject({
      state: 'completed',
      agentId: 'other',
      attemptsMade: 1,
    });
    expect(stopping.assignments).toHaveLength(1);

    // the stopping sidecar goes away: offline, as after any drain of its own
    stopping.close();
    await eventually(
      async () => ((await hub.agents.get('stopping'))?.state === 'offline' ? true : undefined),
      { what: 'the drained agent offline' },
    );
  });

  it('leaves a task accepted before the drain to finish', async () => {
    const { hub } = fixture;
    const queue = 'accepted-first';
    const stopping = await register('accepted-first', queue);
    const id = await createTask(queue);
    const pushed = await stopping.assignmentOf(id);
    expect(await stopping.accept(pushed)).toMatchObject({ ok: true });

    expect(await stopping.send('agent:drain', {})).toEqual({ ok: true, state: 'working' });
    expect(await hub.agents.get('accepted-first')).toMatchObject({ state: 'working', taskId: id });
    expect(await task(id)).toMatchObject({ state: 'running', attemptsMade: 0 });
    expect(await stopping.complete(pushed, 'done')).toEqual({ ok: true });
    expect(await task(id)).toMatchObject({ state: 'completed', agentId: 'accepted-first' });
    expect((await hub.agents.get('accepted-first'))?.state).toBe('draining');
  });
});

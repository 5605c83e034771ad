import { randomBytes } from 'node:crypto';
import type { TaskAssign, TaskView } from '@agentcom/shared';
import { api } from '../helpers/hub';
import { eventually } from '../helpers/poll';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/**
 * `task:log` and `task:progress` on a replica that does not extend the task's lease (the record is
 * read for the queue, then the script checks it where it writes), and on one whose lease map still
 * names an assignment the record no longer has (the script's check alone refuses it).
 */
describe('task:log and task:progress on either replica', () => {
  const fixture = useTestHub({ hubIds: ['hub-a', 'hub-b'] as const });
  let hubA: TestHub;
  let hubB: TestHub;
  beforeAll(() => ([hubA, hubB] = fixture.hubs));

  /** A new agent on replica A, pushed a new task of a queue of its own. */
  const pushedOnA = async (): Promise<{ agent: TestAgent; id: string; msg: TaskAssign }> => {
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await TestAgent.register(hubA.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    fixture.agents.push(agent);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(hubA.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
    });
    return { agent, id: created.body.id, msg: await assigned };
  };
  /** A new agent on replica A working on a new task of a queue of its own. */
  const workingOnA = async () => {
    const pushed = await pushedOnA();
    expect(await pushed.agent.accept(pushed.msg)).toEqual({ ok: true, state: 'working' });
    return pushed;
  };
  const logsOf = async (id: string) =>
    (await api<{ logs: string[] }>(hubA.url, 'GET', `/v1/tasks/${id}/logs?limit=1000`)).body.logs;
  const progressOf = async (id: string) =>
    (await api<TaskView>(hubA.url, 'GET', `/v1/tasks/${id}`)).body.progress;

  it('takes a log batch and a progress event of the holder on a replica that does not extend its lease', async () => {
    const { agent, id, msg } = await workingOnA();
    const moved = await agent.reconnectTo(hubB.url);
    fixture.agents.push(moved);
    const held = { taskId: id, token: msg.token };
    // B handles events once it recorded the connection, whose resume tracked the lease there;
    // without it (a lease B does not track), B reads the record for the task's queue
    expect(await moved.send('agent:heartbeat', held)).toMatchObject({ ok: true, hubId: 'hub-b' });
    expect(hubB.leases.heldBy(agent.agentId)).toMatchObject(held);
    hubB.leases.untrack(agent.agentId);
    expect(await moved.send('task:log', { ...held, lines: ['one', 'two'] })).toEqual({ ok: true });
    expect(
      await moved.send('task:progress', { ...held, progress: 30, message: 'a third' }),
    ).toEqual({ ok: true });
    expect(hubB.leases.heldBy(agent.agentId)).toBeUndefined();
    expect(await logsOf(id)).toEqual(['one', 'two']);
    expect(await progressOf(id)).toEqual({ percent: 30, message: 'a third' });
    // and on the lease's path once B tracks it again (the next heartbeat)
    expect(await moved.send('agent:heartbeat', held)).toMatchObject({ ok: true, hubId: 'hub-b' });
    expect(hubB.leases.heldBy(agent.agentId)).toMatchObject(held);
    expect(await moved.send('task:log', { ...held, lines: ['three'] })).toEqual({ ok: true });
    expect(await moved.send('task:progress', { ...held, progress: 60 })).toEqual({ ok: true });
    expect(await logsOf(id)).toEqual(['one', 'two', 'three']);
    expect(await progressOf(id)).toBe(60);
    expect(await moved.complete(msg, 'done')).toEqual({ ok: true });
  });

  it('takes them before the accept (state assigned: no lease anywhere)', async () => {
    const { agent, id, msg } = await pushedOnA();
    expect(hubA.leases.heldBy(agent.agentId)).toBeUndefined();
    const held = { taskId: msg.task.id, token: msg.token };
    expect(await agent.send('task:log', { ...held, lines: ['early'] })).toEqual({ ok: true });
    expect(await agent.send('task:progress', { ...held, progress: 5 })).toEqual({ ok: true });
    expect(await logsOf(id)).toEqual(['early']);
    expect(await progressOf(id)).toBe(5);
  });

  it('refuses them when the lease map still names an assignment the record no longer has', async () => {
    const { agent, id, msg } = await workingOnA();
    const held = { taskId: id, token: msg.token };
    // another replica freed the agent (a sweep, a lease lost there): A's map still names the task
    const freed = await hubB.agents.transition({
      agentId: agent.agentId,
      from: 'working',
      to: 'idle',
      reason: 'lease_lost',
      del: ['taskId', 'token', 'taskQueue'],
    });
    expect(freed.ok).toBe(true);
    expect(hubA.leases.heldBy(agent.agentId)).toMatchObject(held);
    expect(await agent.send('task:log', { ...held, lines: ['late'] })).toMatchObject({
      ok: false,
      code: 'E_ASSIGNMENT_SUPERSEDED',
    });
    expect(await agent.send('task:progress', { ...held, progress: 90 })).toMatchObject({
      ok: false,
      code: 'E_ASSIGNMENT_SUPERSEDED',
    });
    expect(await logsOf(id)).toEqual([]);
    expect(await progressOf(id)).toBeUndefined();
  });

  it('closes the connection whose token was replaced, though the lease map still names its task', async () => {
    const { agent, id, msg } = await workingOnA();
    const held = { taskId: id, token: msg.token };
    // a rotation whose close never reached A: only the record's token hash changed
    await fixture.admin.hset(hubA.keys.agent(agent.agentId), 'tokenHash', 'f'.repeat(64));
    expect(hubA.leases.heldBy(agent.agentId)).toMatchObject(held);
    const closed = agent.disconnected();
    const errors: unknown[] = [];
    agent.socket.on('hub:error', (e) => errors.push(e));
    expect(await agent.send('task:progress', { ...held, progress: 90 })).toMatchObject({
      ok: false,
      code: 'E_UNAUTHORIZED',
    });
    await closed;
    await eventually(() => (errors.length > 0 ? true : undefined), { what: 'hub:error' });
    expect(errors[0]).toMatchObject({ code: 'E_UNAUTHORIZED' });
    expect(await progressOf(id)).toBeUndefined();
  });
});

import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import type { Hub } from '../../hub/src/hub';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

describe('leases, heartbeats and stalls (LEASE_MS 3 s, HEARTBEAT_MS 500 ms)', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url, { MAX_STALLED_COUNT: '0' });
  });
  afterEach(() => {
    for (const agent of agents.splice(0)) agent.close();
  });
  afterAll(async () => {
    await hub.close();
    await redis.dispose();
  });

  const register = async (queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return agent;
  };
  const getTask = async (id: string) =>
    (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;

  it('keeps a heartbeating agent on its task well past the lease', async () => {
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(queue);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    const msg = await assigned;
    await agent.accept(msg);
    const until = Date.now() + 3 * 3000;
    while (Date.now() < until) {
      const ack = await agent.send('agent:heartbeat', { taskId: msg.task.id, token: msg.token });
      expect(ack).toEqual({ ok: true, state: 'working', hubId: hub.config.hubId });
      await new Promise((resolve) => setTimeout(resolve, 500)); // the heartbeat period under test
    }
    expect((await getTask(created.body.id)).state).toBe('running');
    expect(await agent.complete(msg, 'long job')).toEqual({ ok: true });
    expect(await getTask(created.body.id)).toMatchObject({ state: 'completed', attempt: 1 });
  });

  it('fails a task whose agent vanished more often than MAX_STALLED_COUNT allows', async () => {
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(queue);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      attempts: 3,
    });
    await agent.accept(await assigned);
    agent.close();
    const rescuer = await register(queue);
    const task = await eventually(
      async () => {
        const view = await getTask(created.body.id);
        return view.state === 'failed' ? view : undefined;
      },
      { what: 'the stalled task to fail', timeoutMs: 20_000 },
    );
    expect(task.error).toMatch(/stalled/);
    expect(rescuer.assignments).toHaveLength(0);
    // the sweeper takes the silent agent offline once its lease is over (independently of the
    // stalled checker, which may fail the task first)
    await eventually(
      async () => {
        const view = await api<{ state: string }>(hub.url, 'GET', `/v1/agents/${agent.agentId}`);
        return view.body.state === 'offline' ? true : undefined;
      },
      { what: 'the vanished agent to be offline', timeoutMs: 10_000 },
    );
  });

  it('tells an agent to abort a task it no longer holds', async () => {
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(queue);
    const ack = await agent.send('agent:heartbeat', {
      taskId: 'not-mine',
      token: `${agent.agentId}:x`,
    });
    expect(ack).toEqual({ ok: true, state: 'idle', abort: true, hubId: hub.config.hubId });
  });
});

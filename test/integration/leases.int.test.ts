import { randomBytes } from 'node:crypto';
import type { TaskAssign, TaskView } from '@agentcom/shared';
import { FAST_TIMINGS, api, eventually, startTestHub } from '../helpers/hub';
import type { RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/**
 * The tests wait out whole leases and stall checks: the hubs run at half the usual test timings
 * (FAST_TIMINGS), in the same ratios to each other.
 */
const halved = (ms: string) => String(Number(ms) / 2);
const TIMINGS = {
  LEASE_MS: halved(FAST_TIMINGS.LEASE_MS),
  HEARTBEAT_MS: halved(FAST_TIMINGS.HEARTBEAT_MS),
  ACK_TIMEOUT_MS: halved(FAST_TIMINGS.ACK_TIMEOUT_MS),
  STALLED_INTERVAL_MS: halved(FAST_TIMINGS.STALLED_INTERVAL_MS),
  SWEEP_MS: halved(FAST_TIMINGS.SWEEP_MS),
};
const LEASE_MS = Number(TIMINGS.LEASE_MS);
const HEARTBEAT_MS = Number(TIMINGS.HEARTBEAT_MS);

describe('leases, heartbeats and stalls (LEASE_MS 1.5 s, HEARTBEAT_MS 250 ms)', () => {
  const fixture = useTestHub({ env: { ...TIMINGS, MAX_STALLED_COUNT: '0' } });
  const { agents } = fixture;
  let redis: RedisProcess;
  let hub: TestHub;
  beforeAll(() => ({ redis, hub } = fixture));

  const register = async (queue: string, hubUrl = hub.url): Promise<TestAgent> => {
    const agent = await TestAgent.register(hubUrl, `agent-${randomBytes(4).toString('hex')}`, [
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
    const until = Date.now() + 3 * LEASE_MS;
    while (Date.now() < until) {
      const ack = await agent.send('agent:heartbeat', { taskId: msg.task.id, token: msg.token });
      expect(ack).toEqual({ ok: true, state: 'working', hubId: hub.config.hubId });
      await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS)); // the heartbeat period under test
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

  // the lease keeper's entries follow the agent's connections on one replica
  /** An agent of a new queue that was pushed a new task (not accepted yet). */
  const pushed = async () => {
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await register(queue);
    const assigned = agent.nextAssignment();
    await api(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    return { agent, msg: await assigned };
  };

  it('keeps the lease of a newer connection that resumed the task when the older one closes', async () => {
    const { agent, msg } = await pushed();
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    const held = { taskId: msg.task.id, queue: msg.task.queue, token: msg.token };
    expect(hub.leases.heldBy(agent.agentId)).toMatchObject(held);
    // the sidecar reconnects (same replica) and resumes: its older connection is replaced
    const replaced = agent.disconnected();
    const again = new TestAgent(hub.url, agent.agentId, agent.token, agent.queues);
    again.current = agent.current;
    agents.push(again);
    await again.connect();
    await replaced;
    await hub.gateway.settled(2000); // the older connection's disconnect is recorded
    expect(await hub.agents.get(agent.agentId)).toMatchObject({ state: 'working' });
    expect(hub.leases.heldBy(agent.agentId)).toMatchObject(held);
    expect(await again.complete(msg, 'done')).toEqual({ ok: true });
  });

  it('drops the lease of the older connection when the newer one does not resume its task', async () => {
    const { agent, msg } = await pushed();
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    expect(hub.leases.heldBy(agent.agentId)).toMatchObject({ token: msg.token });
    // restarted without its task (say its state was lost): the task goes back to wait
    const replaced = agent.disconnected();
    const again = new TestAgent(hub.url, agent.agentId, agent.token, agent.queues);
    agents.push(again);
    const retried = again.nextAssignment();
    await again.connect();
    await replaced;
    await hub.gateway.settled(2000);
    const next = await retried; // the same task, pushed again under a new token
    expect(next.task.id).toBe(msg.task.id);
    expect(next.token).not.toBe(msg.token);
    expect(hub.leases.heldBy(agent.agentId)).toBeUndefined();
  });

  it('renews the lock of a task resumed on another replica just before it ran out', async () => {
    const { agent, msg } = await pushed();
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    const lock = hub.keys.bullLock(msg.task.queue, msg.task.id);
    // another replica (its lease ticks are not in step with the lock's last extension here)
    const other = await startTestHub(redis.url, {
      ...TIMINGS,
      MAX_STALLED_COUNT: '0',
      AGENTCOM_PREFIX: hub.config.prefix,
    });
    try {
      // the connection drops; the sidecar comes back late within the lease, to the other replica
      agent.close();
      await eventually(
        async () => {
          const ttl = await fixture.admin.pttl(lock);
          return ttl > 0 && ttl < 300 ? true : undefined;
        },
        { what: 'the lock about to run out', timeoutMs: 10_000, intervalMs: 20 },
      );
      const again = new TestAgent(other.url, agent.agentId, agent.token, agent.queues);
      again.current = agent.current;
      agents.push(again);
      await again.connect();
      await eventually(
        async () =>
          (await other.agents.get(agent.agentId))?.socketId === again.socket.id ? true : undefined,
        { what: 'the resume recorded' },
      );
      expect(await other.agents.get(agent.agentId)).toMatchObject({ state: 'working' });
      // resumed for a whole lease (it had under 300 ms left): the lease keeper's next tick may
      // come a heartbeat later, and a loaded machine may take as long again to read it
      expect(await fixture.admin.pttl(lock)).toBeGreaterThan(LEASE_MS / 3);
      // heartbeat periods on: still its task, no lease lost, no stall (MAX_STALLED_COUNT 0)
      for (let i = 0; i < 3; i++) {
        const ack = await again.send('agent:heartbeat', { taskId: msg.task.id, token: msg.token });
        expect(ack).toEqual({ ok: true, state: 'working', hubId: other.config.hubId });
        await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS)); // the heartbeat period under test
      }
      expect(again.cancels).toEqual([]);
      expect(await fixture.admin.get(lock)).toBe(msg.token);
      expect(await again.complete(msg, 'done')).toEqual({ ok: true });
    } finally {
      for (const connected of agents.splice(0)) connected.close();
      await other.close();
    }
  });

  it('starts a fresh count of stalls for an operator retry, with its fresh attempts', async () => {
    // a replica of its own (MAX_STALLED_COUNT 1), on the same Redis
    const stalling = await startTestHub(redis.url, {
      ...TIMINGS,
      MAX_STALLED_COUNT: '1',
      AGENTCOM_PREFIX: `s${randomBytes(3).toString('hex')}`,
    });
    try {
      const view = async (id: string) =>
        (await api<TaskView>(stalling.url, 'GET', `/v1/tasks/${id}`)).body;
      /** `agent` accepts its next assignment and vanishes: the task stalls once its lease is over. */
      const acceptAndVanish = async (agent: TestAgent, assigned: Promise<TaskAssign>) => {
        expect(await agent.accept(await assigned)).toMatchObject({ ok: true });
        agent.close();
      };
      const queue = `q-${randomBytes(4).toString('hex')}`;
      const first = await register(queue, stalling.url);
      const firstAssigned = first.nextAssignment();
      const created = await api<{ id: string }>(stalling.url, 'POST', '/v1/tasks', {
        queue,
        payload: {},
        attempts: 3,
      });
      const id = created.body.id;
      await acceptAndVanish(first, firstAssigned);
      // one stall is allowed: the task comes back to wait, and to the next agent, which fails it
      const second = await register(queue, stalling.url);
      const msg = await second.nextAssignment(20_000);
      await second.accept(msg);
      expect(await second.fail(msg, { error: 'no', retryable: false })).toEqual({ ok: true });
      expect((await view(id)).state).toBe('failed');

      const retry = await api<{ state: string }>(stalling.url, 'POST', `/v1/tasks/${id}/retry`);
      expect(retry.body.state).toBe('waiting');
      // one stall of the retried task is allowed again (it failed at once: its count went on)
      await acceptAndVanish(second, second.nextAssignment());
      const third = await register(queue, stalling.url);
      const retried = await third.nextAssignment(20_000).catch(async (err: Error) => {
        const task = await view(id);
        throw new Error(`${err.message}; the task is ${task.state}: ${task.error ?? ''}`);
      });
      expect(retried.task.id).toBe(id);
      await third.accept(retried);
      expect(await third.complete(retried, 'done')).toEqual({ ok: true });
      expect((await view(id)).state).toBe('completed');
    } finally {
      for (const agent of agents.splice(0)) agent.close();
      await stalling.close();
    }
  });
});

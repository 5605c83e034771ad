import { randomBytes } from 'node:crypto';
import type { TaskAssign } from '@agentcom/shared';
import { api, eventually } from '../helpers/hub';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * Scheduling as a user of the API sees it: priority order, delays and backoffs that end on time,
 * exactly `attempts` runs, the longest-idle agent first. One real hub, real Redis, real sockets.
 */
describe('task scheduling (real hub, Redis, sockets)', () => {
  const fixture = useTestHub();
  const { agents } = fixture;
  const newQueue = (): string => `q-${randomBytes(4).toString('hex')}`;
  const register = async (queues: string[], id = 'sched'): Promise<TestAgent> => {
    const agent = await TestAgent.register(
      fixture.hub.url,
      `${id}-${randomBytes(4).toString('hex')}`,
      queues,
    );
    agents.push(agent);
    return agent;
  };
  const createTask = async (body: Record<string, unknown>): Promise<string> => {
    const created = await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', body);
    expect(created.status).toBe(201);
    return created.body.id;
  };
  /** Accepts and completes the pushed task, and resolves with the next push. */
  const completeThenNext = async (agent: TestAgent, msg: TaskAssign): Promise<TaskAssign> => {
    const next = agent.nextAssignment();
    expect((await agent.accept(msg)).ok).toBe(true);
    expect((await agent.complete(msg, 'done')).ok).toBe(true);
    return next;
  };

  it('hands out a task without a priority first, then prioritized ones, lowest number first', async () => {
    const queue = newQueue();
    const agent = await register([queue]);
    const busy = agent.nextAssignment();
    await createTask({ queue, payload: 'blocker' });
    let msg = await busy;
    const low = await createTask({ queue, payload: 'low', priority: 5 });
    const high = await createTask({ queue, payload: 'high', priority: 1 });
    const plain = await createTask({ queue, payload: 'plain' });
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      msg = await completeThenNext(agent, msg);
      order.push(msg.task.id);
    }
    expect(order).toEqual([plain, high, low]);
  });

  it('gives each task to the agent idle the longest', async () => {
    const queue = newQueue();
    const first = await register([queue], 'first');
    const second = await register([queue], 'second');
    const third = await register([queue], 'third');
    const takers: string[] = [];
    // one task at a time: each agent finishes before the next task, and is then idle the shortest
    for (let i = 0; i < 4; i++) {
      const pushed = new Promise<[TestAgent, TaskAssign]>((resolve) => {
        for (const agent of [first, second, third]) {
          agent.once('assign', (msg: TaskAssign) => resolve([agent, msg]));
        }
      });
      const id = await createTask({ queue, payload: i });
      const [agent, msg] = await pushed;
      for (const other of [first, second, third]) other.removeAllListeners('assign');
      expect(msg.task.id).toBe(id);
      takers.push(agent.agentId);
      expect((await agent.accept(msg)).ok).toBe(true);
      expect((await agent.complete(msg, 'done')).ok).toBe(true);
    }
    expect(takers).toEqual([first.agentId, second.agentId, third.agentId, first.agentId]);
  });

  it('starts a delayed task when it is due, not before and not much later', async () => {
    const queue = newQueue();
    const agent = await register([queue]);
    const assigned = agent.nextAssignment(10_000);
    const before = Date.now();
    const id = await createTask({ queue, payload: {}, delayMs: 1500 });
    const msg = await assigned;
    const after = Date.now() - before;
    expect(msg.task.id).toBe(id);
    expect(after).toBeGreaterThanOrEqual(1450);
    // the safety tick runs every SWEEP_MS (200 ms here): due, it waits about a tick (the rest is slack for a loaded machine)
    expect(after).toBeLessThan(1500 + 4000);
  });

  it('runs a failing task exactly `attempts` times, each retry after its exponential backoff', async () => {
    const queue = newQueue();
    const agent = await register([queue]);
    const id = await createTask({
      queue,
      payload: {},
      attempts: 3,
      backoff: { type: 'exponential', delayMs: 400 },
    });
    const at: number[] = [];
    for (let i = 1; i <= 3; i++) {
      const msg = await agent.assignmentOf(id, i);
      at.push(Date.now());
      expect((await agent.accept(msg)).ok).toBe(true);
      expect((await agent.fail(msg, { error: `boom ${i}`, retryable: true })).ok).toBe(true);
    }
    const gaps = [at[1]! - at[0]!, at[2]! - at[1]!];
    // 400 ms, then 800 ms (BullMQ's exponential), each ending within a tick or so
    expect(gaps[0]).toBeGreaterThanOrEqual(350);
    expect(gaps[0]).toBeLessThan(400 + 4000);
    expect(gaps[1]).toBeGreaterThanOrEqual(750);
    expect(gaps[1]).toBeLessThan(800 + 4000);
    const failed = await eventually(
      async () => {
        const view = await api<{ state: string; attemptsMade: number; error: string }>(
          fixture.hub.url,
          'GET',
          `/v1/tasks/${id}`,
        );
        return view.body.state === 'failed' ? view.body : undefined;
      },
      { what: 'the task failed' },
    );
    expect(failed).toMatchObject({ attemptsMade: 3, error: 'boom 3' });
    // no fourth run: a task that ends the agent gets next is another one's
    const next = agent.nextAssignment();
    const other = await createTask({ queue, payload: 'after' });
    expect((await next).task.id).toBe(other);
  });
});

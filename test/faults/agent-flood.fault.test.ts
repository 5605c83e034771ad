import { randomBytes } from 'node:crypto';
import {
  MAX_EVENTS_IN_FLIGHT,
  MAX_LOG_LINES,
  MAX_TASK_LOG_LINES,
  type TaskAssign,
} from '@agentcom/shared';
import { api } from '../helpers/hub';
import { startHubProcess, type HubProcess } from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';

/**
 * An authenticated agent that floods the hub with events for its own task, without waiting for
 * their acks: the replica bounds the work it takes from one connection (the excess is refused
 * E_RATE_LIMITED, nothing else), the task's log stays bounded in Redis, the flooder stays
 * connected, and a sidecar that waits for its acks is never refused. One hub process, one
 * redis-server, protocol-level agents.
 */

const FLOOD_EVENTS = 10_000;
const LINE = 'x'.repeat(100);

jest.setTimeout(180_000);

type Loose = { emit(event: string, payload: unknown, ack: (res: unknown) => void): void };

/** Emits `count` events at once, without waiting; resolves with how many got each answer, per event. */
function flood(
  agent: TestAgent,
  count: number,
  message: (i: number) => [string, unknown],
): Promise<Record<string, number>> {
  const answers: Record<string, number> = {};
  let acked = 0;
  return withTimeout(
    new Promise((resolve) => {
      for (let i = 0; i < count; i++) {
        const [event, payload] = message(i);
        (agent.socket as unknown as Loose).emit(event, payload, (res) => {
          const { ok, code } = res as { ok: boolean; code?: string };
          const key = `${event} ${ok ? 'ok' : String(code)}`;
          answers[key] = (answers[key] ?? 0) + 1;
          if (++acked === count) resolve(answers);
        });
      }
    }),
    120_000,
    'the acks of the flood',
  );
}

describe('an agent flooding its replica with events', () => {
  let redis: RedisProcess;
  let hub: HubProcess;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startHubProcess(redis.url, `f${randomBytes(3).toString('hex')}`, 'hub-flood');
  }, 60_000);
  afterAll(async () => {
    for (const agent of agents) agent.close();
    await hub?.kill('SIGKILL');
    await redis?.dispose();
  });

  const working = async (agentId: string): Promise<{ agent: TestAgent; msg: TaskAssign }> => {
    const queue = `${agentId}-q`;
    const agent = await TestAgent.register(hub.url, agentId, [queue]);
    agents.push(agent);
    const assigned = agent.nextAssignment();
    const created = await api(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    expect(created.status).toBe(201);
    const msg = await assigned;
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    return { agent, msg };
  };
  const logCount = async (taskId: string): Promise<{ count: number; last: string[] }> => {
    const head = await api<{ count: number }>(hub.url, 'GET', `/v1/tasks/${taskId}/logs?limit=1`);
    const { count } = head.body;
    const tail = await api<{ logs: string[] }>(
      hub.url,
      'GET',
      `/v1/tasks/${taskId}/logs?start=${Math.max(0, count - 1)}&limit=1`,
    );
    return { count, last: tail.body.logs };
  };

  it(`refuses E_RATE_LIMITED what one connection sends beyond ${MAX_EVENTS_IN_FLIGHT} events in flight; the flooder stays connected, others are served`, async () => {
    const { agent: flooder, msg } = await working('flooder');
    const ref = { taskId: msg.task.id, token: msg.token };
    const lines = Array.from({ length: MAX_LOG_LINES }, (_, i) => `${i} ${LINE}`);
    const victim = await TestAgent.register(hub.url, 'bystander', ['bystander-q']);
    agents.push(victim);

    const kinds: Array<[string, unknown]> = [
      ['task:log', { ...ref, lines }],
      ['task:progress', { ...ref, progress: 50, message: LINE }],
      ['agent:heartbeat', ref],
    ];
    const flooded = flood(flooder, FLOOD_EVENTS, (i) => kinds[i % kinds.length]!);
    // meanwhile another agent of the replica gets a task and its heartbeats answered
    const assigned = victim.nextAssignment(60_000);
    const created = await api(hub.url, 'POST', '/v1/tasks', { queue: 'bystander-q', payload: {} });
    expect(created.status).toBe(201);
    expect(await victim.send('agent:heartbeat', {})).toMatchObject({ ok: true });
    expect(await assigned).toMatchObject({ task: { queue: 'bystander-q' } });
    const answers = await flooded;

    // every event answered: taken, or refused at once; nothing else
    const total = (answer: string): number =>
      kinds.reduce((sum, [event]) => sum + (answers[`${event} ${answer}`] ?? 0), 0);
    expect(total('ok') + total('E_RATE_LIMITED')).toBe(FLOOD_EVENTS);
    expect(total('E_RATE_LIMITED')).toBeGreaterThan(FLOOD_EVENTS / 2);
    expect(flooder.socket.connected).toBe(true);
    // the Redis log of the task holds what was taken, never more than the cap
    const taken = (answers['task:log ok'] ?? 0) * MAX_LOG_LINES;
    expect((await logCount(ref.taskId)).count).toBe(Math.min(taken, MAX_TASK_LOG_LINES));
    // once its acks are in, the flooder is served again
    expect(await flooder.send('task:progress', { ...ref, progress: 60 })).toEqual({ ok: true });
  });

  it(`keeps the last ${MAX_TASK_LOG_LINES} log lines of a task; an agent that waits for its acks is never refused`, async () => {
    const { agent, msg } = await working('chatty');
    const ref = { taskId: msg.task.id, token: msg.token };
    const batches = MAX_TASK_LOG_LINES / MAX_LOG_LINES + 20;
    const refused: unknown[] = [];
    for (let b = 0; b < batches; b++) {
      const lines = Array.from({ length: MAX_LOG_LINES }, (_, i) => `${b * MAX_LOG_LINES + i}`);
      // a heartbeat alongside, as a sidecar sends one while a log batch is in flight
      const [logAck, beatAck] = await Promise.all([
        agent.send('task:log', { ...ref, lines }),
        agent.send('agent:heartbeat', ref),
      ]);
      if (!logAck.ok) refused.push(logAck);
      if (!beatAck.ok) refused.push(beatAck);
    }
    expect(refused).toEqual([]);
    const sent = batches * MAX_LOG_LINES;
    expect(await logCount(ref.taskId)).toEqual({
      count: MAX_TASK_LOG_LINES,
      last: [String(sent - 1)],
    });
    const first = await api<{ logs: string[] }>(
      hub.url,
      'GET',
      `/v1/tasks/${ref.taskId}/logs?limit=1`,
    );
    expect(first.body.logs).toEqual([String(sent - MAX_TASK_LOG_LINES)]);
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
  });
});

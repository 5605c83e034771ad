import { randomBytes } from 'node:crypto';
import {
  MAX_EVENTS_IN_FLIGHT,
  MAX_LOG_LINES,
  MAX_TASK_LOG_LINES,
  PROTOCOL_VERSION,
  type AgentView,
  type TaskAssign,
  type TaskView,
} from '@agentcom/shared';
import {
  FLOOD_CLOSE_GRACE_MS,
  FLOOD_COOLDOWN_MS,
  FLOOD_REFUSALS,
  FLOOD_REFUSALS_PER_SECOND,
} from '../../hub/src/gateway/flood-guard';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { sumMetric } from '../helpers/metrics';
import { mintToken, startHubProcess, type HubProcess } from '../helpers/processes';
import type { RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { RawSocketIo } from './raw-socket';

/**
 * An authenticated agent that floods the hub with events for its own task, without waiting for
 * their acks: the replica bounds the work it takes from one connection (the excess is refused
 * E_RATE_LIMITED, nothing else), the task's log stays bounded in Redis, a burst within the
 * refusal budget keeps the connection, a flood beyond it closes the connection (the task held
 * comes back through the usual disconnect path, the agent's handshakes are refused for the
 * cooldown), and a sidecar that waits for its acks is never refused. Every kind of refusal spends
 * the same budget: events without an ack, without exactly one payload, refused by their schema
 * or under a name that is no client event close a connection that keeps sending them too. A
 * flooder that never answers the WebSocket close loses its TCP connection within a second or
 * so. One hub process, one redis-server, protocol-level agents.
 */

/**
 * A burst within the refusal budget: at most this many refused, and what gets taken counts its
 * handling and the work of its frame too (0.1 and up each), so half the budget: a whole budget's
 * worth of events at once is closed now (CI saw it), where only the refused ones counted before.
 */
const BURST_EVENTS = FLOOD_REFUSALS / 2;
/** A flood beyond it, sent at once: the budget refills by 100 a second, not by thousands. */
const FLOOD_EVENTS = 5 * FLOOD_REFUSALS;
const LINE = 'x'.repeat(100);
const FLOOD_WARNING = 'agent kept sending events that are refused: closing its connection';

jest.setTimeout(180_000);

type Loose = { emit(event: string, ...args: unknown[]): void };
const noAnswer = (): void => undefined;

/**
 * Emits `count` events at once, without waiting; resolves with how many got each answer, per
 * event. `onAck` is told how many were answered so far, at each answer.
 */
function flood(
  agent: TestAgent,
  count: number,
  message: (i: number) => [string, unknown],
  onAck: (acked: number) => void = () => undefined,
): Promise<Record<string, number>> {
  const answers: Record<string, number> = {};
  let acked = 0;
  return withTimeout(
    new Promise((resolve) => {
      for (let i = 0; i < count; i++) {
        const [event, payload] = message(i);
        (agent.socket as unknown as Loose).emit(event, payload, (res: unknown) => {
          const { ok, code } = res as { ok: boolean; code?: string };
          const key = `${event} ${ok ? 'ok' : String(code)}`;
          answers[key] = (answers[key] ?? 0) + 1;
          onAck(++acked);
          if (acked === count) resolve(answers);
        });
      }
    }),
    120_000,
    'the acks of the flood',
  );
}

/**
 * Emits {@link FLOOD_EVENTS} events at once, without waiting, and resolves once the replica closed
 * the connection, with the `hub:error` it sent first and the close reason (bounded).
 */
async function floodUntilClosed(
  agent: TestAgent,
  message: (i: number) => [string, unknown],
): Promise<{ error: unknown; reason: string; at: number }> {
  const error = new Promise<unknown>((resolve) => agent.socket.once('hub:error', resolve));
  const closed = agent.disconnected();
  for (let i = 0; i < FLOOD_EVENTS; i++) {
    const [event, payload] = message(i);
    (agent.socket as unknown as Loose).emit(event, payload, noAnswer);
  }
  const [hubError, reason] = await withTimeout(
    Promise.all([error, closed]),
    60_000,
    'the replica closing the flooding connection',
  );
  return { error: hubError, reason, at: Date.now() };
}

/**
 * Sends `count` events with `send`, without waiting, then a heartbeat with an ack. Resolves with
 * the `hub:error` the replica sent and the close reason once it closed the connection, or with
 * `still connected` when the heartbeat is answered: a connection's events are handled in order,
 * so the replica let the whole flood through without closing it.
 */
async function floodOutcome(
  agent: TestAgent,
  count: number,
  send: (socket: Loose, i: number) => void,
): Promise<{ error: unknown; reason: string } | 'still connected'> {
  const socket = agent.socket as unknown as Loose;
  const error = new Promise<unknown>((resolve) => agent.socket.once('hub:error', resolve));
  const reason = agent.disconnected();
  const closed = Promise.all([error, reason]).then(([e, r]) => ({ error: e, reason: r }));
  for (let i = 0; i < count; i++) send(socket, i);
  const answered = new Promise<'still connected'>((resolve) =>
    socket.emit('agent:heartbeat', {}, () => resolve('still connected')),
  );
  return withTimeout(
    Promise.race([closed, answered]),
    60_000,
    'the replica closing the connection, or answering after the flood',
  );
}

/** The stable code of a refused handshake (`connect_error` data), or `connected`. */
async function handshake(agent: TestAgent): Promise<string> {
  return agent.connect().then(
    () => 'connected',
    (err: unknown) => String((err as { data?: { code?: unknown } }).data?.code ?? err),
  );
}

describe('an agent flooding its replica with events', () => {
  const agents: TestAgent[] = [];
  const raws: RawSocketIo[] = [];
  const cluster = useHubProcesses({
    per: 'describe',
    beforeKill: () => {
      for (const agent of agents) agent.close();
      for (const raw of raws) raw.close();
    },
  });
  let redis: RedisProcess;
  let hub: HubProcess;

  beforeAll(async () => {
    ({ redis } = cluster);
    hub = await startHubProcess(redis.url, cluster.prefix, 'hub-flood');
    cluster.hubs.push(hub);
  }, 60_000);

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
  const floodDisconnects = async (): Promise<number> => {
    const response = await fetch(`${hub.url}/metrics`, {
      headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
    });
    expect(response.status).toBe(200);
    const text = await response.text();
    // the series is exported from the start, at 0 before any flood
    expect(text).toMatch(/^agentcom_agent_disconnects_total\{[^}]*reason="flood"/m);
    return sumMetric([text], 'agentcom_agent_disconnects_total', 'reason="flood"');
  };
  /**
   * The replica's warnings (pino level 40) that it closed this agent's connection for flooding,
   * naming the kind of the last refusal when `kind` is given.
   */
  const floodWarnings = (agentId: string, kind?: string): number =>
    hub.output
      .split('\n')
      .filter(
        (line) =>
          line.includes(FLOOD_WARNING) &&
          line.includes(`"agentId":"${agentId}"`) &&
          line.includes('"level":40') &&
          (kind === undefined || line.includes(`"kind":"${kind}"`)),
      ).length;

  it(`refuses E_RATE_LIMITED what one connection sends beyond ${MAX_EVENTS_IN_FLIGHT} events in flight; a burst within the refusal budget keeps the connection, others are served`, async () => {
    const { agent: flooder, msg } = await working('flooder');
    const ref = { taskId: msg.task.id, token: msg.token };
    const lines = Array.from({ length: MAX_LOG_LINES }, (_, i) => `${i} ${LINE}`);
    const victim = await TestAgent.register(hub.url, 'bystander', ['bystander-q']);
    agents.push(victim);

    const kinds: Array<[string, unknown]> = [
      ['task:log', { ...ref, lines }],
      ['task:progress', { ...ref, progress: 50, message: LINE }],
      ['agent:heartbeat', ref],
      // a payload its schema refuses: beyond the limit it is refused unread, like the others
      ['task:accept', { taskId: 7 }],
    ];
    // Redis paused during the burst: each event the replica takes waits for it, so the replica
    // holds exactly its limit in flight and answers every other event at once, however fast
    // either process runs (with Redis running, how many were refused depended on that: a run
    // with another test process on the CPU saw 86 of 500)
    const { pid } = redis;
    if (pid === undefined) throw new Error('redis-server has no pid');
    let paused = true;
    const resume = (): void => {
      if (paused) process.kill(pid, 'SIGCONT');
      paused = false;
    };
    const atOnce = BURST_EVENTS - MAX_EVENTS_IN_FLIGHT;
    process.kill(pid, 'SIGSTOP');
    let answers: Record<string, number>;
    try {
      let refusedAll: () => void = () => undefined;
      const refused = new Promise<void>((resolve) => (refusedAll = resolve));
      const flooded = flood(
        flooder,
        BURST_EVENTS,
        (i) => kinds[i % kinds.length]!,
        (acked) => acked === atOnce && refusedAll(),
      );
      await withTimeout(refused, 30_000, 'the answers given while Redis is paused');
      resume();
      // meanwhile another agent of the replica gets a task and its heartbeats answered
      const assigned = victim.nextAssignment(60_000);
      const created = await api(hub.url, 'POST', '/v1/tasks', {
        queue: 'bystander-q',
        payload: {},
      });
      expect(created.status).toBe(201);
      expect(await victim.send('agent:heartbeat', {})).toMatchObject({ ok: true });
      expect(await assigned).toMatchObject({ task: { queue: 'bystander-q' } });
      answers = await flooded;
    } finally {
      resume();
    }

    // every event answered: taken (the limit's worth), or refused at once; nothing else
    const total = (answer: string): number =>
      kinds.reduce((sum, [event]) => sum + (answers[`${event} ${answer}`] ?? 0), 0);
    expect(total('ok')).toBe(MAX_EVENTS_IN_FLIGHT);
    expect(total('E_RATE_LIMITED') + total('E_VALIDATION')).toBe(atOnce);
    // the in-flight check comes before the schema: the excess costs no schema check
    expect(answers['task:accept ok']).toBeUndefined();
    expect(answers['task:accept E_VALIDATION']).toBeGreaterThan(0);
    expect(answers['task:accept E_RATE_LIMITED']).toBeGreaterThan(BURST_EVENTS / kinds.length / 2);
    expect(total('E_VALIDATION')).toBe(answers['task:accept E_VALIDATION']);
    expect(flooder.socket.connected).toBe(true);
    expect(await floodDisconnects()).toBe(0);
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

  it(`closes a connection refused over ${FLOOD_REFUSALS} times (then ${FLOOD_REFUSALS_PER_SECOND} a second): hub:error E_RATE_LIMITED, a warning, a metric; the task it held comes back; its handshakes are refused for ${FLOOD_COOLDOWN_MS / 1000} s, then it may connect and is closed again if it floods again`, async () => {
    const agentId = 'flood-closed';
    const queue = `${agentId}-q`;
    const { agent: flooder, msg } = await working(agentId);
    const ref = { taskId: msg.task.id, token: msg.token };
    // idle on the same queue: gets the task once it is back to wait
    const rescuer = await TestAgent.register(hub.url, 'rescuer', [queue]);
    agents.push(rescuer);
    const rescued = rescuer.nextAssignment(60_000);
    rescued.catch(() => undefined); // awaited below; not left unhandled if the test fails first

    const lines = Array.from({ length: MAX_LOG_LINES }, (_, i) => `${i} ${LINE}`);
    const kinds: Array<[string, unknown]> = [
      ['task:log', { ...ref, lines }],
      ['task:progress', { ...ref, progress: 50, message: LINE }],
      ['agent:heartbeat', ref],
    ];
    const closed = await floodUntilClosed(flooder, (i) => kinds[i % kinds.length]!);
    expect(closed.error).toEqual({
      code: 'E_RATE_LIMITED',
      message: expect.stringContaining('connection closed') as unknown,
    });
    expect(closed.reason).toBe('io server disconnect');
    expect(await floodDisconnects()).toBe(1);
    await eventually(() => (floodWarnings(agentId) === 1 ? true : undefined), {
      what: 'the warning naming the agent',
    });

    // the usual disconnect: the record keeps the task, the agent is only away
    const away = await api<AgentView>(hub.url, 'GET', `/v1/agents/${agentId}`);
    expect(away.body).toMatchObject({ currentTask: { taskId: ref.taskId } });
    expect(away.body.disconnectedAt).toBeDefined();

    // reconnecting at once, as the flooder it is: refused, before any token check (no Redis
    // work: a wrong token gets the same answer, and counts no failed handshake)
    const refusedCodes = new Set<string>();
    const early = new TestAgent(hub.url, agentId, flooder.token, [queue]);
    early.current = flooder.current;
    refusedCodes.add(await handshake(early));
    early.close();
    expect([...refusedCodes]).toEqual(['E_RATE_LIMITED']);
    const guessing = new TestAgent(hub.url, agentId, 'not-the-token', [queue]);
    expect(await handshake(guessing)).toBe('E_RATE_LIMITED');
    guessing.close();

    // the task is not lost: back to wait once its lease is over, and run by the other agent
    const next = await rescued;
    expect(next.task.id).toBe(ref.taskId);
    expect(await rescuer.accept(next)).toMatchObject({ ok: true });
    expect(await rescuer.complete(next, 'rescued')).toEqual({ ok: true });
    const task = await api<TaskView>(hub.url, 'GET', `/v1/tasks/${ref.taskId}`);
    expect(task.body).toMatchObject({ state: 'completed', result: 'rescued', agentId: 'rescuer' });

    // once the cooldown is over it connects again (refused E_RATE_LIMITED until then) ...
    const back = await eventually(
      async () => {
        const attempt = new TestAgent(hub.url, agentId, flooder.token, [queue]);
        const outcome = await handshake(attempt);
        if (outcome === 'connected') return attempt;
        refusedCodes.add(outcome);
        attempt.close();
        return undefined;
      },
      {
        timeoutMs: FLOOD_COOLDOWN_MS + 10_000,
        intervalMs: 500,
        what: 'a handshake after the cooldown',
      },
    );
    agents.push(back);
    expect([...refusedCodes]).toEqual(['E_RATE_LIMITED']);
    expect(Date.now() - closed.at).toBeGreaterThanOrEqual(FLOOD_COOLDOWN_MS - 1000);
    expect(await back.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'idle' });

    // ... and flooding again closes it again, for another cooldown
    const again = await floodUntilClosed(back, () => ['agent:heartbeat', {}]);
    expect(again.error).toMatchObject({ code: 'E_RATE_LIMITED' });
    expect(again.reason).toBe('io server disconnect');
    expect(await floodDisconnects()).toBe(2);
    await eventually(() => (floodWarnings(agentId) === 2 ? true : undefined), {
      what: 'the second warning',
    });
    const refusedAgain = new TestAgent(hub.url, agentId, flooder.token, [queue]);
    expect(await handshake(refusedAgain)).toBe('E_RATE_LIMITED');
    refusedAgain.close();
  });

  const refusedKinds: Array<[string, string, (socket: Loose, i: number) => void]> = [
    [
      'events without an ack callback',
      'without an ack',
      (socket, i) => socket.emit(i % 2 ? 'agent:heartbeat' : 'task:log', { lines: [LINE] }),
    ],
    [
      'events without exactly one payload',
      'not one payload',
      (socket, i) =>
        i % 2
          ? socket.emit('agent:heartbeat', noAnswer)
          : socket.emit('agent:heartbeat', {}, 'extra', noAnswer),
    ],
    [
      'payloads their schema refuses',
      'refused by its schema',
      (socket) =>
        socket.emit(
          'task:log',
          { taskId: 7, token: 't', lines: Array.from({ length: MAX_LOG_LINES }, () => LINE) },
          noAnswer,
        ),
    ],
    [
      'events under names that are no client event, with an ack or without',
      'unknown event',
      (socket, i) =>
        i % 2
          ? socket.emit('no:such:event', { lines: [LINE] })
          : socket.emit('task:cancel', {}, noAnswer),
    ],
  ];

  it.each(refusedKinds)(
    `closes a connection that keeps sending %s (the same budget: over ${FLOOD_REFUSALS}, then ${FLOOD_REFUSALS_PER_SECOND} a second)`,
    async (_, kind, send) => {
      const agentId = `flood-${kind.replace(/ /g, '-')}`;
      const flooder = await TestAgent.register(hub.url, agentId, [`${agentId}-q`]);
      agents.push(flooder);
      const before = await floodDisconnects();

      const outcome = await floodOutcome(flooder, FLOOD_EVENTS, send);
      expect(outcome).toEqual({
        error: {
          code: 'E_RATE_LIMITED',
          message: expect.stringContaining('connection closed') as unknown,
        },
        reason: 'io server disconnect',
      });
      expect(await floodDisconnects()).toBe(before + 1);
      await eventually(() => (floodWarnings(agentId, kind) === 1 ? true : undefined), {
        what: `the warning naming the agent and the refusal (${kind})`,
      });
      const again = new TestAgent(hub.url, agentId, flooder.token, [`${agentId}-q`]);
      expect(await handshake(again)).toBe('E_RATE_LIMITED');
      again.close();
    },
  );

  it(`drops the TCP connection of a flooder that never answers the WebSocket close ${FLOOD_CLOSE_GRACE_MS} ms after closing it, not ws' 30 s later`, async () => {
    const agentId = 'flood-deaf';
    const token = await mintToken(hub.url, agentId);
    const raw = await RawSocketIo.open(hub.url);
    raws.push(raw);
    const auth = { agentId, token, protocol: PROTOCOL_VERSION, queues: ['q'], sidecarVersion: 't' };
    expect(await raw.connect(JSON.stringify(auth))).toMatchObject({ kind: 'connected' });
    const before = await floodDisconnects();

    // from now on it reads nothing: not its acks, not the hub:error, not the close frame
    raw.stopReading();
    // heartbeats with an ack id, at once: the excess beyond the in-flight limit is refused
    for (let id = 1; id <= 2 * FLOOD_REFUSALS; id++) {
      raw.sendFrame(`42/agent,${id}["agent:heartbeat",{}]`);
    }
    const flooded = Date.now();
    // and it goes on sending, as a flooder does, for as long as its connection lasts
    const more = setInterval(() => raw.emitNoAck('["agent:heartbeat",{}]'), 10);
    const closed = await raw
      .waitClosed(FLOOD_CLOSE_GRACE_MS + 4000)
      .then((code) =>
        code === undefined ? 'still open' : `closed after ${Date.now() - flooded} ms`,
      )
      .finally(() => clearInterval(more));
    expect(closed).toMatch(/^closed after \d+ ms$/);
    // the replica closed it for flooding first: the flood went through the usual path
    expect(await floodDisconnects()).toBe(before + 1);
    await eventually(
      () => (floodWarnings(agentId, 'beyond the in-flight limit') === 1 ? true : undefined),
      { what: 'the warning naming the agent' },
    );
    // the replica serves on
    const bystander = await TestAgent.register(hub.url, 'after-the-deaf-one');
    agents.push(bystander);
    expect(await bystander.send('agent:heartbeat', {})).toMatchObject({ ok: true });
  });
  it('AGENT_FLOOD_REFUSALS sets the budget, and the handshake cooldown follows it (the time the budget takes to fill up again)', async () => {
    const budget = 200;
    const small = await startHubProcess(
      redis.url,
      `g${randomBytes(3).toString('hex')}`,
      'hub-flood-small',
      { AGENT_FLOOD_REFUSALS: String(budget) },
    );
    try {
      const unknownEvents = (socket: Loose): void => socket.emit('no:such:event', {});
      const count = 2.5 * budget; // within the default budget, beyond this one
      const patient = await TestAgent.register(hub.url, 'flood-knob-default', ['knob-q']);
      agents.push(patient);
      expect(await floodOutcome(patient, count, unknownEvents)).toBe('still connected');

      const flooder = await TestAgent.register(small.url, 'flood-knob-small', ['knob-q']);
      agents.push(flooder);
      expect(await floodOutcome(flooder, count, unknownEvents)).toMatchObject({
        reason: 'io server disconnect',
      });
      const closedAt = Date.now();
      const cooldownMs = (budget / FLOOD_REFUSALS_PER_SECOND) * 1000; // 2 s, not the default 10
      const again = (): TestAgent => {
        const agent = new TestAgent(small.url, flooder.agentId, flooder.token, ['knob-q']);
        agents.push(agent);
        return agent;
      };
      expect(await handshake(again())).toBe('E_RATE_LIMITED');
      await eventually(
        async () => ((await handshake(again())) === 'connected' ? true : undefined),
        {
          timeoutMs: FLOOD_COOLDOWN_MS - 2000,
          intervalMs: 200,
          what: `a handshake let through once the ${cooldownMs} ms cooldown is over`,
        },
      );
      expect(Date.now() - closedAt).toBeGreaterThanOrEqual(cooldownMs - 500);
    } finally {
      await small.kill('SIGKILL');
    }
  });
});

import {
  MAX_EVENTS_IN_FLIGHT,
  MAX_LOG_LINE_BYTES,
  MAX_LOG_LINES,
  MAX_MESSAGE_BYTES,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  jsonBytes,
  type TaskView,
} from '@agentcom/shared';
import { readFileSync } from 'node:fs';
import {
  FLOOD_REFUSALS,
  FLOOD_REFUSALS_PER_SECOND,
  HANDLING_COST,
} from '../../hub/src/gateway/flood-guard';
import { RawSocketIo, type RawAckResult } from '../faults/raw-socket';
import { api, TEST_ADMIN_KEY } from '../helpers/hub';
import { sumMetric } from '../helpers/metrics';
import { mintToken, startHubProcess, type HubProcess } from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';

/**
 * The flood guard at the edges of what an authenticated connection can send: acks the hub never
 * asked for, big refused frames, big accepted ones, small ones slow to decode, binary packets.
 * Each costs this replica the decoding of its frame; a connection that keeps sending them must be
 * closed as one that keeps sending small refused events is, and a binary packet closes it at once.
 * Raw Engine.IO/Socket.IO frames and a real socket.io-client on a real hub process, a real
 * redis-server. The hub runs as a child process (its build): the guard counts the time a frame
 * takes to decode and check, and under Jest a loop over an array runs tens of times slower.
 */

/** `count` arrays nested `depth` deep around a zero, as JSON text: slow to decode for its size. */
const nestedArrays = (count: number, depth: number): string =>
  Array.from({ length: count }, () => `${'['.repeat(depth)}0${']'.repeat(depth)}`).join(',');

/** CPU time a process has used, ms (`/proc/<pid>/stat` utime + stime, in 1/100 s). */
const cpuMs = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
};

describe('flood guard at the socket edges', () => {
  let redis: RedisProcess;
  let hub: HubProcess;
  const raws: RawSocketIo[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startHubProcess(redis.url, 'edge', 'edge-hub');
  });
  afterAll(async () => {
    for (const raw of raws) raw.terminate();
    await hub.kill('SIGTERM');
    await redis.dispose();
  });

  const connected = async (agentId: string): Promise<RawSocketIo> => {
    const token = await mintToken(hub.url, agentId);
    const raw = await RawSocketIo.open(hub.url);
    raws.push(raw);
    const auth = { agentId, token, protocol: PROTOCOL_VERSION, queues: ['q'], sidecarVersion: 't' };
    expect(await raw.connect(JSON.stringify(auth))).toMatchObject({ kind: 'connected' });
    return raw;
  };
  /** A heartbeat after what was sent: answered (the connection was kept), or the close. */
  const heartbeat = (raw: RawSocketIo): Promise<RawAckResult> =>
    raw.emit('["agent:heartbeat",{}]', 30_000);
  const hubErrors = (raw: RawSocketIo): unknown[] =>
    raw.events.filter(([name]) => name === 'hub:error').map(([, body]) => body);
  /**
   * Sends `frame` again and again, {@link MAX_EVENTS_IN_FLIGHT} at a time (each after the ack of
   * the one before it: never beyond the in-flight limit), until the connection closes or `max`
   * were sent; the answers by code.
   */
  const streamUntilClosed = async (
    raw: RawSocketIo,
    frame: string,
    max: number,
  ): Promise<{ answered: number; codes: Record<string, number> }> => {
    let sent = 0;
    let answered = 0;
    const codes: Record<string, number> = {};
    const sender = async (): Promise<void> => {
      while (sent < max) {
        sent++;
        const result = await raw.emit(frame, 30_000);
        if (result.kind !== 'ack') return;
        answered++;
        const code = (result.args[0] as { code?: string } | undefined)?.code ?? 'ok';
        codes[code] = (codes[code] ?? 0) + 1;
      }
    };
    await Promise.all(Array.from({ length: MAX_EVENTS_IN_FLIGHT }, sender));
    return { answered, codes };
  };

  it(`closes a connection that keeps sending acks the hub never asked for (${3 * FLOOD_REFUSALS} of them)`, async () => {
    const raw = await connected('edge-acks');
    // the hub emits nothing with an ack to an agent: Socket.IO decodes each of these and drops it
    for (let id = 1; id <= 3 * FLOOD_REFUSALS; id++) {
      raw.sendFrame(
        `43/agent,${1000 + id}[{"taskId":"a","token":"b","lines":["${'x'.repeat(100)}"]}]`,
      );
    }
    expect(await heartbeat(raw)).toMatchObject({ kind: 'closed' });
    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
  });

  it('closes a connection that keeps sending big refused frames, however few a second', async () => {
    const raw = await connected('edge-big');
    // 1.8 MiB each, 600,000 log lines: refused by the schema (100 lines at most), and tens of
    // milliseconds of decoding each, so the budget refilled faster than one refusal per frame spent it
    const lines = Array.from({ length: 600_000 }, () => '""').join(',');
    const frame = (id: number): string =>
      `42/agent,${1000 + id}["task:log",{"taskId":"a","token":"b","lines":[${lines}]}]`;
    for (let id = 1; id <= 20; id++) raw.sendFrame(frame(id));
    expect(await heartbeat(raw)).toMatchObject({ kind: 'closed' });
    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
  });

  it('closes the connection of a binary event at once: nothing is held for its attachments', async () => {
    const raw = await connected('edge-binary');
    const bystander = await connected('edge-binary-bystander');
    const rejected = async (): Promise<number> => {
      const response = await fetch(`${hub.url}/metrics`, {
        headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
      });
      return sumMetric([await response.text()], 'agentcom_socket_payloads_rejected_total');
    };
    const before = await rejected();
    // an event a client names `error` is no packet the decoder refused: an unknown event, once
    expect(await raw.emit('["error",{"message":"x"}]')).toMatchObject({
      kind: 'ack',
      args: [{ ok: false, code: 'E_VALIDATION' }],
    });
    expect(await rejected()).toBe(before + 1);
    // it names one attachment and never sends it: Socket.IO's default decoder waited for it (up
    // to 10 of 2 MiB each) for as long as the connection lasted
    raw.sendFrame('451-/agent,1001["task:log",{"_placeholder":true,"num":0}]');
    expect(await raw.waitClosed(10_000)).toEqual(expect.any(Number));
    expect(hubErrors(raw)).toEqual([]);
    expect(await rejected()).toBe(before + 2);
    expect(await heartbeat(bystander)).toMatchObject({ kind: 'ack', args: [{ ok: true }] });
  });

  it('disconnects a socket.io-client that emits a binary attachment', async () => {
    const agent = await TestAgent.register(hub.url, 'edge-binary-client');
    try {
      const disconnected = agent.disconnected();
      // a Buffer anywhere in the arguments makes socket.io-client send a binary event
      const loose = agent.socket as unknown as {
        emit: (event: string, ...args: unknown[]) => void;
      };
      loose.emit('task:log', { taskId: 'a', token: 'b', lines: [Buffer.from('x')] });
      expect(await withTimeout(disconnected, 10_000, 'the disconnect')).toBe('transport close');
    } finally {
      agent.close();
    }
  });

  it('closes a connection that sends maximum-size valid frames back to back', async () => {
    const raw = await connected('edge-big-accepted');
    // a result of 1 MiB of zeros: valid, and answered (E_ASSIGNMENT_SUPERSEDED: the agent holds
    // no task) as often as it is sent, after tens of milliseconds of decoding and checking each;
    // it counts its size (32) and that work (~100): the budget takes a handful, never 31
    const result = `[${Array.from({ length: MAX_PAYLOAD_BYTES / 2 - 1 }, () => '0').join(',')}]`;
    expect(result.length).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
    const frame = `["task:complete",{"taskId":"a","token":"b","result":${result}}]`;
    const answers: RawAckResult[] = [];
    while (answers.length < 40 && answers.at(-1)?.kind !== 'closed') {
      answers.push(await raw.emit(frame, 30_000));
    }
    expect(answers[0]).toMatchObject({
      kind: 'ack',
      args: [{ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' }],
    });
    expect(answers.at(-1)).toEqual({ kind: 'closed', code: expect.any(Number) });
    expect(answers.length).toBeLessThanOrEqual(31);
    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
  });

  it(`closes an agent streaming small frames slow to decode (${MAX_EVENTS_IN_FLIGHT} in flight) within a bounded amount of their work, while an agent beside it gets its tasks done`, async () => {
    // a result of ~60 KiB nested 63 deep: valid (at most 64 levels, far under 1 MiB), answered
    // E_ASSIGNMENT_SUPERSEDED (the agent holds no task) as often as it is sent, ~6 ms of decoding
    // and checking each; under 64 KiB a frame counted nothing, so this went on for ever
    const frame = `["task:complete",{"taskId":"a","token":"b","result":[${nestedArrays(500, 62)}]}]`;
    expect(frame.length).toBeGreaterThan(60 * 1024);
    expect(frame.length).toBeLessThan(64 * 1024 - 64);
    const flooder = await connected('edge-slow-frames');
    const bystander = await TestAgent.register(hub.url, 'edge-slow-bystander', ['edge-slow-q']);
    try {
      const bystanderErrors: unknown[] = [];
      bystander.socket.on('hub:error', (error) => bystanderErrors.push(error));
      /** One task through the bystander, as a sidecar runs it: accept, progress, complete. */
      const runTask = async (): Promise<string> => {
        const assigned = bystander.nextAssignment(30_000);
        const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
          queue: 'edge-slow-q',
          payload: {},
        });
        const task = await assigned;
        const ref = { taskId: task.task.id, token: task.token };
        expect(await bystander.accept(task)).toMatchObject({ ok: true });
        expect(await bystander.send('task:progress', { ...ref, progress: 50 })).toEqual({
          ok: true,
        });
        expect(await bystander.complete(task, { done: true })).toEqual({ ok: true });
        return created.body.id;
      };
      let flooding = true;
      const done: string[] = [];
      const bystanderWork = (async () => {
        while (flooding || done.length < 5) done.push(await runTask());
      })();

      const cpuBefore = cpuMs(hub.pid);
      const flood = await streamUntilClosed(flooder, frame, 2000);
      // the replica's CPU meanwhile (the bystander's tasks included) bounds what the flood cost it
      const floodCpuMs = cpuMs(hub.pid) - cpuBefore;
      flooding = false;
      await bystanderWork;

      expect(hubErrors(flooder)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
      expect(flood.codes).toEqual({ E_ASSIGNMENT_SUPERSEDED: flood.answered });
      // 15 to 30 here: the budget's 1,000 refusals are 250 ms of such work, its refill 25 ms a second
      expect(flood.answered).toBeGreaterThan(0);
      expect(flood.answered).toBeLessThan(200);
      expect(floodCpuMs).toBeLessThan(3000);
      // the agent beside it: never refused, still connected, its tasks completed
      expect(bystanderErrors).toEqual([]);
      expect(bystander.socket.connected).toBe(true);
      for (const id of done) {
        const view = await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`);
        expect(view.body).toMatchObject({ state: 'completed', result: { done: true } });
      }
    } finally {
      bystander.close();
    }
  });

  it(`closes an agent streaming small valid reports of a task it does not hold (${MAX_EVENTS_IN_FLIGHT} in flight) within ~${FLOOD_REFUSALS}, while an agent beside it gets its tasks done`, async () => {
    // a progress of a task the agent does not hold, under a token of its own: valid, cheap to
    // decode (~0.04 of a refusal), answered E_ASSIGNMENT_SUPERSEDED after a Redis read, some
    // 10,000 a second here; counted its frame's work only, the budget took ~25,000 of them first
    const agentId = 'edge-cheap-reports';
    const frame = `["task:progress",{"taskId":"a","token":"${agentId}:none","progress":50}]`;
    const flooder = await connected(agentId);
    const bystander = await TestAgent.register(hub.url, 'edge-cheap-bystander', ['edge-cheap-q']);
    try {
      const bystanderErrors: unknown[] = [];
      bystander.socket.on('hub:error', (error) => bystanderErrors.push(error));
      const runTask = async (): Promise<string> => {
        const assigned = bystander.nextAssignment(30_000);
        const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
          queue: 'edge-cheap-q',
          payload: {},
        });
        const task = await assigned;
        expect(await bystander.accept(task)).toMatchObject({ ok: true });
        expect(await bystander.complete(task, { done: true })).toEqual({ ok: true });
        return created.body.id;
      };
      let flooding = true;
      const done: string[] = [];
      const bystanderWork = (async () => {
        while (flooding || done.length < 5) done.push(await runTask());
      })();

      const flood = await streamUntilClosed(flooder, frame, 5 * FLOOD_REFUSALS);
      flooding = false;
      await bystanderWork;

      expect(hubErrors(flooder)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
      expect(flood.codes).toEqual({ E_ASSIGNMENT_SUPERSEDED: flood.answered });
      // each counts its handling and one more for its answer (~1.14): ~880 and the refill
      expect(flood.answered).toBeGreaterThan(FLOOD_REFUSALS / 2);
      expect(flood.answered).toBeLessThan(1.2 * FLOOD_REFUSALS);
      expect(bystanderErrors).toEqual([]);
      expect(bystander.socket.connected).toBe(true);
      expect(done.length).toBeGreaterThanOrEqual(5);
      for (const id of done) {
        const view = await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`);
        expect(view.body).toMatchObject({ state: 'completed', result: { done: true } });
      }
    } finally {
      bystander.close();
    }
  });

  it(`closes an agent streaming heartbeats (${MAX_EVENTS_IN_FLIGHT} in flight) once past ${FLOOD_REFUSALS_PER_SECOND / HANDLING_COST} a second: each counts its handling`, async () => {
    // answered ok, each a few dozen µs of the replica's CPU, ~4,000 a second here; counted their
    // frame's work only (~0.04 each), they spent ~60 a second of the 100 the budget gains
    const raw = await connected('edge-heartbeats');
    const started = performance.now();
    const flood = await streamUntilClosed(raw, '["agent:heartbeat",{}]', 30 * FLOOD_REFUSALS);
    const seconds = (performance.now() - started) / 1000;

    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
    expect(flood.codes).toEqual({ ok: flood.answered });
    // the budget at 0.1 an event: 10,000 at once, then 1,000 a second (in flight: 32 more)
    const bound = (FLOOD_REFUSALS + FLOOD_REFUSALS_PER_SECOND * seconds) / HANDLING_COST;
    expect(flood.answered).toBeLessThanOrEqual(bound + MAX_EVENTS_IN_FLIGHT);
    expect(flood.answered).toBeGreaterThan(FLOOD_REFUSALS / HANDLING_COST / 2);
  });

  it('closes a connection whose valid log batches carry 2 MiB of costly JSON under a duplicated key', async () => {
    const raw = await connected('edge-log-duplicate');
    // JSON.parse keeps the last of duplicated keys: the schema sees one line and accepts the
    // batch, after the whole frame was decoded (~110 ms of `{}`); a log batch counted nothing
    const empties = Array.from({ length: 690_000 }, () => '{}').join(',');
    const frame = `["task:log",{"taskId":"a","token":"b","lines":[${empties}],"lines":["x"]}]`;
    expect(frame.length).toBeGreaterThan(MAX_MESSAGE_BYTES - 100 * 1024);
    expect(frame.length).toBeLessThan(MAX_MESSAGE_BYTES - 1024);
    // one after another: each sent once the one before it is answered (or the connection closed)
    const answers: RawAckResult[] = [];
    while (answers.length < 5 && answers.at(-1)?.kind !== 'closed') {
      answers.push(await raw.emit(frame, 60_000));
    }
    expect(answers[0]).toMatchObject({
      kind: 'ack',
      args: [{ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' }],
    });
    expect(answers.at(-1)).toEqual({ kind: 'closed', code: expect.any(Number) });
    expect(await heartbeat(raw)).toMatchObject({ kind: 'closed' });
    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
  });

  it('counts the decoding of a frame refused beyond the in-flight limit (Redis stalled): closed within a bounded number', async () => {
    const raw = await connected('edge-in-flight-slow');
    const bystander = await connected('edge-in-flight-bystander');
    const redisPid = redis.pid;
    if (redisPid === undefined) throw new Error('no redis-server pid');
    // Redis stalled: the heartbeats of the flooder hold its 32 slots, and what it sends beyond
    // them is refused unread, once decoded: ~60 KiB nested 63 deep, ~2.5 ms each, counted one each
    const frame = `["task:complete",{"taskId":"a","token":"b","result":[${nestedArrays(500, 62)}]}]`;
    process.kill(redisPid, 'SIGSTOP');
    try {
      const held = Array.from({ length: MAX_EVENTS_IN_FLIGHT }, () => heartbeat(raw));
      const refusals: RawAckResult[] = [];
      // one at a time: each answered at once (E_RATE_LIMITED), or the close
      while (refusals.length < 900 && refusals.at(-1)?.kind !== 'closed') {
        refusals.push(await raw.emit(frame, 30_000));
      }
      expect(refusals.slice(0, -1)).toEqual(
        refusals.slice(0, -1).map(() => ({
          kind: 'ack',
          args: [expect.objectContaining({ code: 'E_RATE_LIMITED' })],
        })),
      );
      expect(refusals.at(-1)).toEqual({ kind: 'closed', code: expect.any(Number) });
      // 60 to 90 here: each counts its decoding (~2.5 ms: ~12), where it counted one
      expect(refusals.length).toBeLessThan(300);
      expect(await Promise.all(held)).toEqual(
        held.map(() => ({ kind: 'closed', code: expect.any(Number) })),
      );
      expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
    } finally {
      process.kill(redisPid, 'SIGCONT');
    }
    expect(await heartbeat(bystander)).toMatchObject({ kind: 'ack', args: [{ ok: true }] });
  });

  it('keeps an honest agent that sends the largest log batches, then the largest result', async () => {
    const agent = await TestAgent.register(hub.url, 'edge-honest');
    try {
      const hubErrorsOfAgent: unknown[] = [];
      agent.socket.on('hub:error', (error) => hubErrorsOfAgent.push(error));
      const assigned = agent.nextAssignment();
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue: 'default',
        payload: {},
      });
      const task = await assigned;
      expect(task.task.id).toBe(created.body.id);
      expect(await agent.accept(task)).toMatchObject({ ok: true });
      // a task printing long lines fast: full batches, back to back, one in flight (as a sidecar)
      const lines = Array.from({ length: MAX_LOG_LINES }, () => 'x'.repeat(MAX_LOG_LINE_BYTES));
      for (let i = 0; i < 10; i++) {
        const ref = { taskId: task.task.id, token: task.token };
        expect(await agent.send('task:log', { ...ref, lines })).toEqual({ ok: true });
      }
      // the largest result there is: 1 MiB as JSON, of small values
      const result = Array.from({ length: MAX_PAYLOAD_BYTES / 2 - 1 }, () => 0);
      expect(jsonBytes(result)).toBe(MAX_PAYLOAD_BYTES - 1);
      expect(await agent.complete(task, result)).toEqual({ ok: true });
      expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true });
      expect(hubErrorsOfAgent).toEqual([]);
      expect(agent.socket.connected).toBe(true);
      const view = await api<TaskView>(hub.url, 'GET', `/v1/tasks/${created.body.id}`);
      expect(view.body).toMatchObject({ state: 'completed' });
      expect((view.body.result as unknown[]).length).toBe(result.length);
    } finally {
      agent.close();
    }
  });

  it('keeps a connection whose big log batches are handled back to back: they count their size and decoding', async () => {
    const raw = await connected('edge-big-valid');
    // the largest log batch there is (100 lines of 8 KiB, 800 KiB), for a task the agent does not
    // hold: handled (E_ASSIGNMENT_SUPERSEDED), as a sidecar's late batch is; each counts ~28 (25
    // for its size, ~3 for the ~1 ms of its decoding), so 20 back to back spend about half the
    // budget
    const lines = JSON.stringify(
      Array.from({ length: MAX_LOG_LINES }, () => 'x'.repeat(MAX_LOG_LINE_BYTES)),
    );
    for (let i = 0; i < 20; i++) {
      const answer = await raw.emit(`["task:log",{"taskId":"a","token":"b","lines":${lines}}]`);
      expect(answer).toMatchObject({
        kind: 'ack',
        args: [{ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' }],
      });
    }
    expect(await heartbeat(raw)).toMatchObject({ kind: 'ack', args: [{ ok: true }] });
    expect(hubErrors(raw)).toEqual([]);
  });
});

import {
  MAX_LOG_LINE_BYTES,
  MAX_LOG_LINES,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  jsonBytes,
  type TaskView,
} from '@agentcom/shared';
import type { Hub } from '../../hub/src/hub';
import { FLOOD_REFUSALS } from '../../hub/src/gateway/flood-guard';
import { RawSocketIo, type RawAckResult } from '../faults/raw-socket';
import { api, startTestHub, TEST_ADMIN_KEY } from '../helpers/hub';
import { sumMetric } from '../helpers/metrics';
import { mintToken } from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';

/**
 * The flood guard at the edges of what an authenticated connection can send: acks the hub never
 * asked for, big refused frames, big accepted ones, binary packets. Each costs this replica the
 * decoding of its frame; a connection that keeps sending them must be closed as one that keeps
 * sending small refused events is, and a binary packet closes it at once. Raw Engine.IO/Socket.IO
 * frames and a real socket.io-client on a real hub, a real redis-server.
 */
describe('flood guard at the socket edges', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  const raws: RawSocketIo[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
  });
  afterAll(async () => {
    for (const raw of raws) raw.terminate();
    await hub.close();
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
    // no task) as often as it is sent, after 100 ms and more of decoding and checking each
    const result = `[${Array.from({ length: MAX_PAYLOAD_BYTES / 2 - 1 }, () => '0').join(',')}]`;
    expect(result.length).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
    const frame = `["task:complete",{"taskId":"a","token":"b","result":${result}}]`;
    const answers = await Promise.all([1, 2, 3].map(() => raw.emit(frame, 30_000)));
    expect(answers[0]).toMatchObject({
      kind: 'ack',
      args: [{ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' }],
    });
    expect(answers.slice(1)).toEqual([
      { kind: 'closed', code: expect.any(Number) },
      { kind: 'closed', code: expect.any(Number) },
    ]);
    expect(await heartbeat(raw)).toMatchObject({ kind: 'closed' });
    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
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

  it('keeps a connection whose big log batches are handled, however many: they count nothing', async () => {
    const raw = await connected('edge-big-valid');
    // the largest log batch there is (100 lines of 8 KiB, 800 KiB), for a task the agent does not
    // hold: handled (E_ASSIGNMENT_SUPERSEDED), as a sidecar's late batch is, however many (a log
    // batch decodes in a few ms whatever its size: only a frame of other events counts its size)
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

import { MAX_LOG_LINE_BYTES, MAX_LOG_LINES, PROTOCOL_VERSION } from '@agentcom/shared';
import type { Hub } from '../../hub/src/hub';
import { FLOOD_REFUSALS } from '../../hub/src/gateway/flood-guard';
import { RawSocketIo, type RawAckResult } from '../faults/raw-socket';
import { startTestHub } from '../helpers/hub';
import { mintToken } from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/**
 * The flood guard at the edges of what an authenticated connection can send that does nothing:
 * acks the hub never asked for, and big refused frames. Each costs this replica the decoding of
 * its frame; a connection that keeps sending them must be closed as one that keeps sending small
 * refused events is. Raw Engine.IO/Socket.IO frames on a real hub, a real redis-server.
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

  it('counts the binary attachments of a refused event with its frame', async () => {
    const raw = await connected('edge-binary');
    // a binary event: its JSON names one attachment, sent next as a binary frame of 1.5 MiB
    raw.sendFrame('451-/agent,1001["task:log",{"_placeholder":true,"num":0}]');
    raw.sendFrame(Buffer.alloc(1.5 * 1024 * 1024));
    expect(await heartbeat(raw)).toMatchObject({ kind: 'closed' });
    expect(hubErrors(raw)).toEqual([expect.objectContaining({ code: 'E_RATE_LIMITED' })]);
  });

  it('keeps a connection whose big frames are handled: only refusals count their size', async () => {
    const raw = await connected('edge-big-valid');
    // the largest log batch there is (100 lines of 8 KiB, 800 KiB), for a task the agent does not
    // hold: handled (E_ASSIGNMENT_SUPERSEDED), as a sidecar's late batch is, however many
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

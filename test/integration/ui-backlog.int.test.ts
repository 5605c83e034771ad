import { Redis } from 'ioredis';
import { UI_BACKLOG_MAX_PACKETS, outputBacklog } from '../../hub/src/ui/output-backlog';
import { RawSocketIo } from '../faults/raw-socket';
import { eventually } from '../helpers/hub';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';
import { UiClient, pageSession } from '../helpers/ui-client';

/** Transitions written per round, each about 1 KB (a long task field). */
const PER_ROUND = 500;
/** At most this many rounds (about 50 MB of transitions): far past either backlog limit. */
const MAX_ROUNDS = 100;

describe('a /ui connection that stops reading', () => {
  let raw: RawSocketIo | undefined;
  let healthy: UiClient | undefined;
  let pongs: NodeJS.Timeout | undefined;
  const fixture = useTestHub({
    beforeClose: () => {
      clearInterval(pongs);
      raw?.terminate();
      healthy?.close();
    },
  });
  let hub: TestHub;
  let writer: Redis;
  beforeAll(() => ({ hub, admin: writer } = fixture));

  it('is closed once its backlog passes the limit, while a browser that reads keeps its feed', async () => {
    const session = await pageSession(hub.url);
    healthy = new UiClient(hub.url, { session });
    await healthy.connected();
    raw = await RawSocketIo.open(hub.url, { namespace: '/ui' });
    const connected = await raw.connect(JSON.stringify({ session }));
    expect(connected).toMatchObject({ kind: 'connected' });
    const sid = connected.kind === 'connected' ? connected.sid : '';
    const nsp = hub.io.of('/ui');
    const stuck = nsp.sockets.get(sid);
    expect(stuck).toBeDefined();
    expect(hub.io.engine.clientsCount).toBe(2);

    // it reads nothing more, and keeps its connection alive with pongs sent blindly
    raw.stopReading();
    const sendPong = raw.sendFrame.bind(raw, '3');
    pongs = setInterval(sendPong, 250);

    // transitions as the scripts write them (the tail forwards them to every /ui socket here)
    const task = 't'.repeat(1000);
    let version = 0;
    let mostPackets = 0;
    let rounds = 0;
    while (rounds < MAX_ROUNDS && nsp.sockets.has(sid)) {
      const pipeline = writer.pipeline();
      for (let n = 0; n < PER_ROUND; n++) {
        version++;
        pipeline.xadd(
          hub.keys.events,
          '*',
          ...['agent', 'flood', 'from', 'idle', 'to', 'assigned', 'reason', 'assign'],
          ...['task', task, 'hub', hub.config.hubId, 'version', String(version)],
          ...['at', String(Date.now())],
        );
      }
      await pipeline.exec();
      rounds++;
      if (stuck) mostPackets = Math.max(mostPackets, outputBacklog(stuck).packets);
      // the tail reads what was written before the next round
      await healthy.transition((e) => e.agent === 'flood' && e.version === version, 'the round');
    }
    expect(nsp.sockets.has(sid)).toBe(false);
    expect(rounds).toBeLessThan(MAX_ROUNDS);
    expect(mostPackets).toBeLessThanOrEqual(UI_BACKLOG_MAX_PACKETS + 1);
    // its TCP connection is gone too (a WebSocket close would wait behind the unread output)
    await eventually(() => (hub.io.engine.clientsCount === 1 ? true : undefined), {
      what: 'the Engine.IO connection closed',
      timeoutMs: 5000,
    });

    // the browser that reads got every transition, in order, and is still connected
    const flood = healthy.received.filter((e) => e.agent === 'flood');
    expect(flood).toHaveLength(version);
    expect(flood.every((e, i) => e.version === i + 1)).toBe(true);
    expect(healthy.socket.connected).toBe(true);
  });
});

import type { UiSnapshot } from '../../hub/src/ui/ui-events';
import { RawSocketIo } from '../faults/raw-socket';
import { TEST_ADMIN_KEY, eventually } from '../helpers/hub';
import type { RedisProcess } from '../helpers/redis-server';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';
import { UiClient, pageSession } from '../helpers/ui-client';

/** How long an answer may take while Redis is down (each used to wait for Redis to come back). */
const ANSWER_BOUND_MS = 3000;
/** `/ui` handshakes sent on one raw connection during the outage. */
const HANDSHAKES = 1000;

describe('the agents page while Redis is down', () => {
  const clients: UiClient[] = [];
  const raws: RawSocketIo[] = [];
  const fixture = useTestHub({
    beforeClose: () => {
      for (const client of clients.splice(0)) client.close();
      for (const raw of raws.splice(0)) raw.close();
    },
  });
  let redis: RedisProcess;
  let hub: TestHub;
  beforeAll(() => ({ redis, hub } = fixture));

  /** Commands waiting in the command connection's offline queue for Redis to come back. */
  const queued = (): number =>
    (hub.redis.command as unknown as { offlineQueue: { length: number } }).offlineQueue.length;
  const page = (): Promise<Response> =>
    fetch(`${hub.url}/`, {
      headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
      signal: AbortSignal.timeout(ANSWER_BOUND_MS),
    });

  it('answers the page 503, refuses /ui handshakes and answers snapshot:get with an error, at once, queueing no command per handshake', async () => {
    const session = await pageSession(hub.url);
    const live = new UiClient(hub.url, { session });
    clients.push(live);
    await live.connected();
    await eventually(() => live.snapshots[0], { what: 'the first snapshot' });
    // an Engine.IO connection of its own, opened before the outage (opening one needs no Redis)
    const raw = await RawSocketIo.open(hub.url, { namespace: '/ui' });
    raws.push(raw);

    await redis.stop('SIGKILL');
    try {
      await eventually(() => (hub.redis.command.status !== 'ready' ? true : undefined), {
        what: 'the hub saw Redis go',
      });
      const before = queued();

      const answer = await page();
      expect(answer.status).toBe(503);
      expect(await answer.json()).toMatchObject({ error: { code: 'E_UNAVAILABLE' } });
      const document = (await (await fetch(`${hub.url}/docs/openapi.json`)).json()) as {
        paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
      };
      expect(JSON.stringify(document.paths['/']?.get?.responses['503'])).toContain('E_UNAVAILABLE');

      const reply = (await live.socket.timeout(ANSWER_BOUND_MS).emitWithAck('snapshot:get')) as
        UiSnapshot | { error: string };
      expect(reply).toEqual({ error: expect.stringMatching(/redis/i) });
      expect(live.socket.connected).toBe(true);

      // a client sending handshake after handshake on one connection, each with a valid session:
      // each is refused at once, none leaves a session check waiting for Redis
      const auth = JSON.stringify({ session });
      expect(await raw.connect(auth, ANSWER_BOUND_MS)).toMatchObject({
        kind: 'refused',
        data: { code: 'E_UNAVAILABLE' },
      });
      for (let n = 1; n < HANDSHAKES; n++) raw.sendFrame(`40/ui,${auth}`);
      await eventually(() => (raw.refusedHandshakes === HANDSHAKES ? true : undefined), {
        what: `${HANDSHAKES} handshakes refused`,
        timeoutMs: ANSWER_BOUND_MS,
      });
      expect(queued() - before).toBeLessThan(10);
      // as the page's socket.io client sees it
      const fresh = new UiClient(hub.url, { session });
      clients.push(fresh);
      await expect(fresh.connected()).rejects.toMatchObject({ data: { code: 'E_UNAVAILABLE' } });
    } finally {
      await redis.restart();
    }

    // back: a page, its session and its socket work again
    await eventually(async () => ((await page()).status === 200 ? true : undefined), {
      what: 'the page served again',
    });
    const after = new UiClient(hub.url, { session: await pageSession(hub.url) });
    clients.push(after);
    await after.connected();
    await eventually(() => after.snapshots[0], { what: 'a snapshot after the outage' });
  });
});

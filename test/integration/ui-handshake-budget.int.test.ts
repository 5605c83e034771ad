import { Redis } from 'ioredis';
import { io } from 'socket.io-client';
import { UI_SESSION_CHECKS_PER_CONNECTION } from '../../hub/src/ui/ui-namespace';
import { RawSocketIo, type RawConnectResult } from '../faults/raw-socket';
import { commandCalls } from '../helpers/commandstats';
import { eventually } from '../helpers/hub';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';
import { UiClient, pageSession } from '../helpers/ui-client';

/** CONNECT frames a flooding client sends at once on one connection. */
const BURST = 50;
/** A well-formed session token that names no session: checked in Redis, and refused. */
const noSession = (n: number): string => `uis_${String(n).padStart(43, 'x')}`;
/** How long the hub gets to close a connection past its budget (it does so at once). */
const CLOSE_BOUND_MS = 5000;

describe('/ui handshakes on one connection', () => {
  const raws: RawSocketIo[] = [];
  const clients: UiClient[] = [];
  const fixture = useTestHub({
    beforeClose: () => {
      for (const raw of raws.splice(0)) raw.terminate();
      for (const client of clients.splice(0)) client.close();
    },
  });
  let hub: TestHub;
  let admin: Redis;
  beforeAll(() => ({ hub, admin } = fixture));

  const open = async (): Promise<RawSocketIo> => {
    const raw = await RawSocketIo.open(hub.url, { namespace: '/ui' });
    raws.push(raw);
    return raw;
  };
  /** Session checks (GETEX) Redis ran since it started. */
  const sessionChecks = (): Promise<number> => commandCalls(admin, 'getex');
  /**
   * Session checks once every command the hub sent before now has been run: a PING on the
   * hub's own command connection is answered after them.
   */
  const sessionChecksSettled = async (): Promise<number> => {
    await hub.redis.command.ping();
    return sessionChecks();
  };
  /** Leaves the namespace and waits for the hub to see it (a CONNECT before would close it). */
  const leave = async (raw: RawSocketIo, sid: string): Promise<void> => {
    const socket = hub.io.of('/ui').sockets.get(sid);
    if (!socket) throw new Error(`no /ui socket ${sid}`);
    const left = new Promise((resolve) => socket.once('disconnect', resolve));
    raw.sendFrame('41/ui,');
    await left;
  };
  const connected = { kind: 'connected' } as const;
  const unauthorized = { kind: 'refused', data: { code: 'E_UNAUTHORIZED' } } as const;

  it(`answers ${UI_SESSION_CHECKS_PER_CONNECTION} handshakes, then refuses E_RATE_LIMITED and closes the connection without asking Redis`, async () => {
    const session = await pageSession(hub.url);
    const valid = JSON.stringify({ session });
    const raw = await open();
    const before = await sessionChecks();

    // connect and leave, then again; sessions that are none in between
    const answers: RawConnectResult[] = [];
    for (let n = 0; n < UI_SESSION_CHECKS_PER_CONNECTION; n++) {
      if (n % 2 === 1) {
        answers.push(await raw.connect(JSON.stringify({ session: noSession(n) })));
        continue;
      }
      const answer = await raw.connect(valid);
      answers.push(answer);
      if (answer.kind === 'connected') await leave(raw, answer.sid);
    }
    expect(answers).toMatchObject(answers.map((_, n) => (n % 2 === 1 ? unauthorized : connected)));
    expect((await sessionChecks()) - before).toBe(UI_SESSION_CHECKS_PER_CONNECTION);

    // the next one, with a valid session, is refused and its connection closed
    expect(await raw.connect(valid)).toMatchObject({
      kind: 'refused',
      data: { code: 'E_RATE_LIMITED' },
    });
    expect(await raw.waitClosed(CLOSE_BOUND_MS)).toBeDefined();
    expect((await sessionChecksSettled()) - before).toBe(UI_SESSION_CHECKS_PER_CONNECTION);

    // another connection has a budget of its own: the page still gets in
    const page = new UiClient(hub.url, { session });
    clients.push(page);
    await page.connected();
    await eventually(() => page.snapshots[0], { what: 'a snapshot' });
  });

  it(`checks ${UI_SESSION_CHECKS_PER_CONNECTION} sessions of ${BURST} CONNECTs sent at once, and closes the connection`, async () => {
    const raw = await open();
    const before = await sessionChecks();
    // none waits for another: no socket joins, so each is a handshake of its own
    for (let n = 0; n < BURST; n++)
      raw.sendFrame(`40/ui,${JSON.stringify({ session: noSession(n) })}`);
    expect(await raw.waitClosed(CLOSE_BOUND_MS)).toBeDefined();
    expect(raw.refusedHandshakes).toBeGreaterThan(0);
    expect((await sessionChecksSettled()) - before).toBe(UI_SESSION_CHECKS_PER_CONNECTION);
  });

  it('never refuses the page for its retries: socket.io-client opens a new connection for each', async () => {
    // as the page retries after a refusal (`socket.connect()` on the same Manager)
    const socket = io(`${hub.url}/ui`, {
      transports: ['websocket'],
      forceNew: true,
      auth: { session: 'uis_not-a-session' },
    });
    try {
      for (let attempt = 0; attempt <= UI_SESSION_CHECKS_PER_CONNECTION + 2; attempt++) {
        const refused = new Promise<unknown>((resolve) => socket.once('connect_error', resolve));
        socket.connect();
        expect(await refused).toMatchObject({ data: { code: 'E_UNAUTHORIZED' } });
      }
    } finally {
      socket.disconnect();
    }
  });
});

import { once } from 'node:events';
import { PROTOCOL_VERSION } from '@agentcom/shared';
import { FakeHub } from '../test-support/fake-hub';
import { testLogger } from '../test-support/logger';
import { StallingHub } from '../test-support/stalling-hub';
import { HubConnection, type HubConnectionOptions } from './hub-connection';

/**
 * The order in which a connection with several URLs moves through them: the first URL first, then
 * a cycle of its own drawn from `random`, so a fleet configured with one list does not pile onto
 * the URL listed after a hub that drains or goes away.
 *
 * The cycles below follow from the shuffle (Fisher-Yates from the last index) and a constant
 * source: over 3 URLs, `() => 0` gives A → B → C and `() => 0.5` gives A → C → B; over 4 URLs,
 * `() => 0.5` gives A → D → B → C.
 */

/** Long enough for the few round trips of a test, short of jest's default timeout. */
const TEST_TIMEOUT_MS = 10_000;

let connections: HubConnection[];
let stops: Array<() => Promise<void>>;

beforeEach(() => {
  connections = [];
  stops = [];
});
afterEach(async () => {
  for (const connection of connections) connection.close();
  await Promise.all(stops.map((stop) => stop()));
});

async function fakeHubs(count: number): Promise<FakeHub[]> {
  const hubs: FakeHub[] = [];
  for (let i = 0; i < count; i++) {
    const hub = new FakeHub();
    await hub.start();
    stops.push(() => hub.stop());
    hubs.push(hub);
  }
  return hubs;
}

async function stallingHubs(count: number): Promise<StallingHub[]> {
  const hubs: StallingHub[] = [];
  for (let i = 0; i < count; i++) {
    const hub = new StallingHub();
    await hub.start();
    stops.push(() => hub.stop());
    hubs.push(hub);
  }
  return hubs;
}

function connect(urls: string[], overrides: Partial<HubConnectionOptions> = {}): HubConnection {
  const connection = new HubConnection({
    urls,
    auth: () => ({
      agentId: 'a1',
      token: 't',
      protocol: PROTOCOL_VERSION,
      queues: ['default'],
      sidecarVersion: '0.1.0',
    }),
    failoverAttempts: 1,
    handshakeTimeoutMs: 20_000,
    ackTimeoutMs: 1000,
    logger: testLogger(),
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    refusedRetryMs: 100,
    ...overrides,
  });
  connections.push(connection);
  connection.start();
  return connection;
}

/** Tells every connection on `hub` that it drains, as a stopping replica does. */
function drain(hub: FakeHub): void {
  for (const socket of hub.sockets()) socket.emit('hub:draining', {});
}

describe('HubConnection with several URLs', () => {
  it(
    'sends two connections with the same list, leaving the same hub, to different next URLs',
    async () => {
      const [a, b, c] = (await fakeHubs(3)) as [FakeHub, FakeHub, FakeHub];
      const urls = [a.url, b.url, c.url];
      const one = connect(urls, { random: () => 0 });
      const two = connect(urls, { random: () => 0.5 });
      // Both start on the first URL of the list.
      expect(await once(one, 'connected')).toEqual([a.url]);
      expect(await once(two, 'connected')).toEqual([a.url]);

      const oneMoved = once(one, 'connected');
      const twoMoved = once(two, 'connected');
      drain(a);
      expect(await oneMoved).toEqual([b.url]);
      expect(await twoMoved).toEqual([c.url]);
      expect(b.handshakes).toHaveLength(1);
      expect(c.handshakes).toHaveLength(1);
      expect(a.sockets()).toHaveLength(0);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'tries every URL exactly once per round, in its own order, round after round',
    async () => {
      const hubs = await stallingHubs(4);
      const names = ['A', 'B', 'C', 'D'];
      const tried: string[] = [];
      const eightTried = new Promise<void>((resolve) => {
        hubs.forEach((hub, i) =>
          hub.on('handshake', () => {
            tried.push(names[i] as string);
            if (tried.length === 8) resolve();
          }),
        );
      });
      connect(
        hubs.map((hub) => hub.url),
        { random: () => 0.5, handshakeTimeoutMs: 100 },
      );
      await eightTried;

      const [first, second] = [tried.slice(0, 4), tried.slice(4, 8)];
      expect([...first].sort()).toEqual(names);
      expect(second).toEqual(first);
      // Its own cycle from the first URL, not the order of the list.
      expect(first).toEqual(['A', 'D', 'B', 'C']);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'with one URL, goes back to it as before and draws nothing',
    async () => {
      const [hub] = (await fakeHubs(1)) as [FakeHub];
      let draws = 0;
      const connection = connect([hub.url], {
        random: () => {
          draws++;
          return 0.5;
        },
      });
      expect(await once(connection, 'connected')).toEqual([hub.url]);

      const back = once(connection, 'connected');
      drain(hub);
      expect(await back).toEqual([hub.url]);
      expect(connection.url).toBe(hub.url);
      expect(hub.handshakes).toHaveLength(2);
      expect(draws).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

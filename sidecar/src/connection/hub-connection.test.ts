import { once } from 'node:events';
import { PROTOCOL_VERSION } from '@agentcom/shared';
import { FakeHub } from '../test-support/fake-hub';
import { recordingLogger, testLogger } from '../test-support/logger';
import { waitUntil } from '../test-support/process';
import { StallingHub } from '../test-support/stalling-hub';
import { HubConnection, type HubConnectionOptions } from './hub-connection';

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

async function stallingHub(
  options: ConstructorParameters<typeof StallingHub>[0] = {},
): Promise<StallingHub> {
  const hub = new StallingHub(options);
  await hub.start();
  stops.push(() => hub.stop());
  return hub;
}

async function fakeHub(): Promise<FakeHub> {
  const hub = new FakeHub();
  await hub.start();
  stops.push(() => hub.stop());
  return hub;
}

function connect(
  urls: string[],
  overrides: Partial<HubConnectionOptions> = {},
): { connection: HubConnection; disconnects: string[] } {
  const connection = new HubConnection({
    urls,
    auth: () => ({
      agentId: 'a1',
      token: 't',
      protocol: PROTOCOL_VERSION,
      queues: ['default'],
      sidecarVersion: '0.1.0',
    }),
    failoverAttempts: 2,
    handshakeTimeoutMs: 20_000,
    ackTimeoutMs: 1000,
    logger: testLogger(),
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    refusedRetryMs: 100,
    ...overrides,
  });
  const disconnects: string[] = [];
  connection.on('disconnected', (reason) => disconnects.push(reason));
  connections.push(connection);
  connection.start();
  return { connection, disconnects };
}

describe('HubConnection', () => {
  describe('with a hub that accepts the websocket but does not complete the handshake', () => {
    it(
      'moves to the next URL after failoverAttempts handshakes that got no answer in time',
      async () => {
        const stuck = await stallingHub();
        const good = await fakeHub();
        const connected = once(good, 'connection');
        const { connection } = connect([stuck.url, good.url], { handshakeTimeoutMs: 200 });
        expect(await once(connection, 'connected')).toEqual([good.url]);
        await connected;
        expect(stuck.handshakes).toBe(2);
        expect(connection.state.state).toBe('connected');
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'moves to the next URL after failoverAttempts connections the hub closed during the handshake',
      async () => {
        // Socket.IO's own connectTimeout drops each attempt long before the sidecar's timeout.
        const stuck = await stallingHub({ connectTimeout: 200 });
        const good = await fakeHub();
        const connected = once(good, 'connection');
        const { connection } = connect([stuck.url, good.url], { handshakeTimeoutMs: 60_000 });
        await connected;
        expect(stuck.handshakes).toBe(2);
        expect(connection.url).toBe(good.url);
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'with one URL, tries it again after the handshake timeout until the hub answers',
      async () => {
        const hub = await stallingHub({ answers: (handshake) => handshake > 2 });
        const { connection } = connect([hub.url], { handshakeTimeoutMs: 200 });
        await once(connection, 'connected');
        expect(hub.handshakes).toBe(3);
      },
      TEST_TIMEOUT_MS,
    );
  });

  describe('retryNow', () => {
    it(
      'while a long backoff runs after the hub went away, connects at once once it is back',
      async () => {
        const hub = await fakeHub();
        // socket.io waits 5 to 15 s before its first attempt after the connection is lost
        const { connection } = connect([hub.url], {
          reconnectionDelay: 10_000,
          reconnectionDelayMax: 10_000,
        });
        await once(connection, 'connected');
        const lost = once(connection, 'disconnected');
        await hub.stop();
        await lost;
        await hub.start();
        const asked = performance.now();
        expect(connection.retryNow()).toBe(true);
        await once(connection, 'connected');
        expect(performance.now() - asked).toBeLessThan(2000);
        expect(hub.handshakes).toHaveLength(2);
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'during the pause after a refused handshake, tries the URL that pause was for, at once',
      async () => {
        const [a, b] = await Promise.all([fakeHub(), fakeHub()]);
        a.refuseWith = 'E_UNAVAILABLE';
        const { logger, entries } = recordingLogger();
        // the next URL after a refusal, a minute later
        const { connection } = connect([a.url, b.url], {
          random: () => 0,
          refusedRetryMs: 60_000,
          logger,
        });
        await waitUntil(
          () => entries().some((entry) => entry.code === 'E_UNAVAILABLE'),
          'the refusal',
        );
        const asked = performance.now();
        expect(connection.retryNow()).toBe(true);
        expect(await once(connection, 'connected')).toEqual([b.url]);
        expect(performance.now() - asked).toBeLessThan(2000);
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'answers false once closed: it will not connect again',
      async () => {
        const hub = await fakeHub();
        const { connection } = connect([hub.url]);
        await once(connection, 'connected');
        connection.close();
        expect(connection.retryNow()).toBe(false);
        expect(connection.connected).toBe(false);
        expect(connection.state.state).toBe('disconnected');
      },
      TEST_TIMEOUT_MS,
    );
  });

  describe('its state', () => {
    it(
      'stays connecting, without a disconnected event, while handshakes are dropped before the first connection',
      async () => {
        const hub = await stallingHub({ connectTimeout: 100 });
        const { connection, disconnects } = connect([hub.url], { handshakeTimeoutMs: 60_000 });
        const since = connection.state.since;
        // Two handshakes were dropped when the third one arrives.
        await hub.handshake(3);
        expect(connection.state).toEqual({ state: 'connecting', since });
        expect(disconnects).toEqual([]);
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'is disconnected once a connection was lost, and stays so while handshakes are dropped',
      async () => {
        const hub = await stallingHub({
          answers: (handshake) => handshake === 1,
          connectTimeout: 100,
        });
        const { connection, disconnects } = connect([hub.url], { handshakeTimeoutMs: 60_000 });
        await once(connection, 'connected');
        hub.cutConnections();
        await hub.handshake(4);
        expect(connection.state.state).toBe('disconnected');
        expect(disconnects).toEqual(['transport close']);
      },
      TEST_TIMEOUT_MS,
    );
  });
});

/** Tells every connection on `hub` that it drains, as a stopping replica does. */
function drain(hub: FakeHub): void {
  for (const socket of hub.sockets()) socket.emit('hub:draining', {});
}

/**
 * The order in which a connection with several URLs moves through them: the first URL first, then
 * a cycle of its own drawn from `random`, so a fleet configured with one list does not pile onto
 * the URL listed after a hub that drains or goes away.
 *
 * The cycles below follow from the shuffle (Fisher-Yates from the last index) and a constant
 * source: over 3 URLs, `() => 0` gives A → B → C and `() => 0.5` gives A → C → B; over 4 URLs,
 * `() => 0.5` gives A → D → B → C.
 */

describe('HubConnection with several URLs', () => {
  it(
    'sends two connections with the same list, leaving the same hub, to different next URLs',
    async () => {
      const [a, b, c] = await Promise.all([fakeHub(), fakeHub(), fakeHub()]);
      const urls = [a.url, b.url, c.url];
      const one = connect(urls, { failoverAttempts: 1, random: () => 0 }).connection;
      const two = connect(urls, { failoverAttempts: 1, random: () => 0.5 }).connection;
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
      const hubs = await Promise.all([1, 2, 3, 4].map(() => stallingHub()));
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
        { failoverAttempts: 1, random: () => 0.5, handshakeTimeoutMs: 100 },
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
      const hub = await fakeHub();
      let draws = 0;
      const { connection } = connect([hub.url], {
        failoverAttempts: 1,
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

import { once } from 'node:events';
import { PROTOCOL_VERSION } from '@agentcom/shared';
import { FakeHub } from '../test-support/fake-hub';
import { testLogger } from '../test-support/logger';
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

import { once } from 'node:events';
import { PROTOCOL_VERSION } from '@agentcom/shared';
import { HubConnection } from '../connection/hub-connection';
import { Outbox } from '../outbox/outbox';
import type { Report } from '../outbox/state-schema';
import { FakeHub } from '../test-support/fake-hub';
import { testLogger } from '../test-support/logger';
import { makeTempDir } from '../test-support/temp-dir';
import { ReportDelivery, type ReportSettlement } from './report-delivery';

/**
 * The delivery of stored reports against the scripted hub, over a real connection, with this
 * machine's clock in the test's hands: a rate limit is stored as its end on that clock and sent
 * as what is left of it at each send (the hub's clock is not this one).
 */
describe('ReportDelivery', () => {
  const START = 1_800_000_000_000;
  let clock: number;
  let hub: FakeHub;
  let connection: HubConnection;
  let outbox: Outbox;
  let delivery: ReportDelivery;
  let settled: ReportSettlement[];
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    clock = START;
    settled = [];
    let dir: string;
    ({ dir, cleanup } = await makeTempDir());
    hub = new FakeHub();
    await hub.start();
    outbox = await Outbox.open(dir, testLogger());
    connection = new HubConnection({
      urls: [hub.url],
      auth: () => ({
        agentId: 'a1',
        token: 't',
        protocol: PROTOCOL_VERSION,
        queues: ['default'],
        sidecarVersion: '0.1.0',
      }),
      failoverAttempts: 2,
      handshakeTimeoutMs: 5000,
      ackTimeoutMs: 1000,
      logger: testLogger(),
    });
    const connected = once(connection, 'connected');
    connection.start();
    await connected;
    delivery = new ReportDelivery({
      outbox,
      connection,
      logger: testLogger(),
      // never by the timer: each test sends again itself, after moving the clock
      retryMs: 600_000,
      onSettled: (settlement) => settled.push(settlement),
      now: () => clock,
    });
  });
  afterEach(async () => {
    delivery.stop();
    connection.close();
    await hub.stop();
    await outbox.idle();
    await cleanup();
  });

  const rateLimited = (endsInMs: number): Report => ({
    type: 'fail',
    taskId: 't1',
    token: 'k1',
    error: 'model quota',
    retryable: true,
    kind: 'error',
    rateLimitedUntil: START + endsInMs,
  });
  /** The `task:fail` messages the hub received, in order. */
  const fails = () => hub.messages('task:fail');

  it('sends a rate limit as what is left of it at each send', async () => {
    // the first send is refused with a retryable code; the one sent 2 s later is taken
    let refusals = 1;
    hub.respond = ({ event }) =>
      event === 'task:fail' && refusals-- > 0
        ? { ok: false, code: 'E_UNAVAILABLE', message: 'busy' }
        : undefined;
    await outbox.finishTask(rateLimited(60_000));

    await delivery.flush();
    expect(fails()).toHaveLength(1);
    expect(outbox.reports).toHaveLength(1);
    clock += 2000;
    await delivery.flush();

    expect(fails()).toEqual([
      {
        taskId: 't1',
        token: 'k1',
        error: 'model quota',
        retryable: true,
        kind: 'error',
        retryAfterMs: 60_000,
      },
      {
        taskId: 't1',
        token: 'k1',
        error: 'model quota',
        retryable: true,
        kind: 'error',
        retryAfterMs: 58_000,
      },
    ]);
    expect(settled).toMatchObject([{ outcome: 'acked' }]);
    // kept as its end on this machine's clock until the hub took it
    expect(outbox.reports).toHaveLength(0);
  });

  it('sends a rate limit that ended before its send as 0 (still a rate limit, no rest)', async () => {
    await outbox.finishTask(rateLimited(1500));
    clock += 5000;
    await delivery.flush();
    expect(fails()).toEqual([expect.objectContaining({ retryAfterMs: 0 })]);
  });

  it("keeps a report refused for this connection's token (rotated or revoked) for the next connection", async () => {
    hub.respond = ({ event }) =>
      event === 'task:fail'
        ? { ok: false, code: 'E_UNAUTHORIZED', message: 'the agent token was revoked or replaced' }
        : undefined;
    await outbox.finishTask(rateLimited(0));

    await delivery.flush();
    expect(fails()).toHaveLength(1);
    expect(settled).toEqual([]);
    expect(outbox.reports).toHaveLength(1);
    // a connection with the agent's token takes it
    hub.respond = () => undefined;
    await delivery.flush();
    expect(fails()).toHaveLength(2);
    expect(settled).toMatchObject([{ outcome: 'acked' }]);
    expect(outbox.reports).toHaveLength(0);
  });

  it('sends a failure without a rate limit without one', async () => {
    const { rateLimitedUntil: _, ...plain } = rateLimited(0) as Extract<Report, { type: 'fail' }>;
    await outbox.finishTask(plain);
    await delivery.flush();
    expect(fails()).toHaveLength(1);
    expect(fails()[0]).not.toHaveProperty('retryAfterMs');
    expect(fails()[0]).not.toHaveProperty('rateLimitedUntil');
  });
});

import pino from 'pino';
import { Writable } from 'node:stream';
import { createRedisConnections } from '../../hub/src/redis/connections';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/**
 * The Socket.IO adapter's connections send commands without waiting for their replies (a
 * `publish` for another replica's sockets). A failure of one is neither an unhandled rejection
 * (it crashed a test replica and printed a line each during a stop) nor silent: it is counted
 * and logged.
 */
describe("the adapter's Redis connections", () => {
  let redis: RedisProcess;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.dispose();
  });

  it('count and log publishes that failed unawaited, without an unhandled rejection', async () => {
    const lines: Array<{ msg?: string; command?: string }> = [];
    const logger = pino(
      { level: 'warn' },
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
          done();
        },
      }),
    );
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    let failures = 0;
    let bothFailed: () => void = () => undefined;
    const counted = new Promise<void>((resolve) => (bothFailed = resolve));
    const connections = createRedisConnections(redis.url, logger, {
      onPublishFailure: () => {
        if (++failures === 2) bothFailed();
      },
    });
    try {
      await connections.pub.ping();
      connections.pub.disconnect();
      // as the adapter does: the reply is not awaited
      void connections.pub.publish('agentcom-test', 'lost');
      void connections.pub.publish('agentcom-test', 'lost too');
      await counted;
      // an unhandled rejection is reported once the microtasks of the turn have run
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(failures).toBe(2);
      // one line per 5 s at most
      expect(lines.filter((line) => line.msg?.includes('adapter publish failed'))).toEqual([
        expect.objectContaining({ command: 'publish' }),
      ]);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      connections.disconnect();
    }
  });
});

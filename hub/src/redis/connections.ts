import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../logger';
import { absorbUnheardFailures } from './unheard-failures';
import { coalesceWrites } from './write-coalescer';

/**
 * Redis connections by role. `command` serves agentcom's own scripts and reads; `bullmq` is
 * shared by the Queue and Worker objects; `pub`/`sub` belong to the Socket.IO adapter. Each logs
 * its errors (an unhandled `error` event would crash the replica).
 *
 * `command` and `bullmq` gather the commands of a busy turn of the event loop into one write
 * (`coalesceWrites`). None is auto-pipelined: `command` was (issue 7, second pass) until a task
 * took three script calls instead of seven: ioredis sends an auto-pipeline from `setImmediate`,
 * which cost every dispatch a turn of the event loop (201 → task:assign p50 0.89 → 0.33 ms, p99
 * 5.6 → 2.7 ms without it) and the hub CPU of the pipeline objects, for fewer round trips (1.2 →
 * 3.5 per task, raw BullMQ 2.0) and less Redis CPU per task (162 → 190 µs). The heartbeats of idle
 * agents, where it mattered most, are batched by `HeartbeatBatch` instead.
 */
export interface RedisConnections {
  readonly command: Redis;
  readonly bullmq: Redis;
  readonly pub: Redis;
  readonly sub: Redis;
  /** Counts connection errors for /metrics. */
  errorCount(): number;
  /** QUITs each connection: Redis answers what was sent before, then closes it. */
  close(): Promise<void>;
  /**
   * Closes each connection at once, failing what it still has queued: what a stop does when
   * {@link close} did not end in time (Redis away or frozen, the QUIT queued behind the rest).
   */
  disconnect(): void;
}

export interface RedisConnectionEvents {
  /** A connection error (each is logged, at most one line per connection per 5 s). */
  onError?: () => void;
  /**
   * A `publish` of the Socket.IO adapter failed (the adapter does not wait for its reply): a
   * push or broadcast for another replica's sockets that it never got.
   */
  onPublishFailure?: () => void;
}

export function createRedisConnections(
  url: string,
  logger: Logger,
  { onError = () => undefined, onPublishFailure = () => undefined }: RedisConnectionEvents = {},
): RedisConnections {
  let errors = 0;
  const make = (role: string, options: RedisOptions): Redis => {
    const client = new Redis(url, {
      connectionName: `agentcom:${role}`,
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
      ...options,
    });
    let lastLogged = 0;
    client.on('error', (err: Error) => {
      errors++;
      onError();
      const now = Date.now();
      if (now - lastLogged > 5000) {
        lastLogged = now;
        logger.warn({ role, err: err.message }, 'redis connection error');
      }
    });
    return client;
  };
  const command = make('command', {});
  const bullmq = make('bullmq', {});
  // the two that carry every task's commands; pub/sub carry a few messages per task at most
  coalesceWrites(command);
  coalesceWrites(bullmq);
  const pub = make('pub', {});
  const sub = make('sub', {});
  // the adapter's: it does not handle the replies of what it sends (see absorbUnheardFailures)
  // A failed publish is counted and logged (a line per 5 s at most); the rest is noise: the
  // adapter's unsubscribes at a stop, ioredis' own CLIENT SETINFO on a Redis older than 7.2.
  let lastPublishFailureLogged = 0;
  const onAdapterFailure = (command: string, err: unknown): void => {
    if (command !== 'publish' && command !== 'spublish') return;
    onPublishFailure();
    const now = Date.now();
    if (now - lastPublishFailureLogged > 5000) {
      lastPublishFailureLogged = now;
      const reason = err instanceof Error ? err.message : String(err);
      logger.warn({ command, err: reason }, 'redis: a Socket.IO adapter publish failed');
    }
  };
  absorbUnheardFailures(pub, onAdapterFailure);
  absorbUnheardFailures(sub, onAdapterFailure);
  return {
    command,
    bullmq,
    pub,
    sub,
    errorCount: () => errors,
    async close() {
      await Promise.allSettled([command, bullmq, pub, sub].map((c) => c.quit()));
    },
    disconnect() {
      for (const client of [command, bullmq, pub, sub]) client.disconnect();
    },
  };
}

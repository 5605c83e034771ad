import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../logger';

/**
 * Redis connections by role. `command` serves agentcom's own scripts and reads, auto-pipelined
 * (every command issued in one tick of the event loop goes out in one write: concurrent dispatch
 * steps, reports and heartbeats share round trips); `bullmq` is shared by the Queue and Worker
 * objects and left as BullMQ expects it (not auto-pipelined); `pub`/`sub` belong to the
 * Socket.IO adapter. Each logs its errors (an unhandled `error` event would crash the replica).
 */
export interface RedisConnections {
  readonly command: Redis;
  readonly bullmq: Redis;
  readonly pub: Redis;
  readonly sub: Redis;
  /** Counts connection errors for /metrics. */
  errorCount(): number;
  close(): Promise<void>;
}

export function createRedisConnections(
  url: string,
  logger: Logger,
  onError: () => void = () => undefined,
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
  const command = make('command', { enableAutoPipelining: true });
  const bullmq = make('bullmq', {});
  const pub = make('pub', {});
  const sub = make('sub', {});
  return {
    command,
    bullmq,
    pub,
    sub,
    errorCount: () => errors,
    async close() {
      await Promise.allSettled([command, bullmq, pub, sub].map((c) => c.quit()));
    },
  };
}

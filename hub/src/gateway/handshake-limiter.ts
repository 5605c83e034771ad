import { AppError } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';

const WINDOW_MS = 60_000;

/**
 * Counts failed sidecar handshakes per client address, cluster-wide (in Redis), and refuses an
 * address over the limit with `E_RATE_LIMITED` for the rest of the minute, before any token is
 * checked: guessing tokens costs a minute per `limit` tries on every replica together.
 */
export class HandshakeLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly limit: number,
  ) {}

  async check(address: string): Promise<void> {
    const failures = Number((await this.redis.get(this.keys.authFailures(address))) ?? 0);
    if (failures >= this.limit) {
      throw new AppError(
        'E_RATE_LIMITED',
        'too many failed handshakes from this address; retry in a minute',
      );
    }
  }

  async recordFailure(address: string): Promise<void> {
    const key = this.keys.authFailures(address);
    await this.redis.multi().incr(key).pexpire(key, WINDOW_MS, 'NX').exec();
  }
}

/** The client's address: the socket's peer, or the first X-Forwarded-For hop behind a trusted proxy. */
export function clientAddress(
  handshake: { address: string; headers: Record<string, string | string[] | undefined> },
  trustProxy: boolean,
): string {
  if (trustProxy) {
    const forwarded = handshake.headers['x-forwarded-for'];
    const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
    if (first) return first;
  }
  return handshake.address.replace(/^::ffff:/, '');
}

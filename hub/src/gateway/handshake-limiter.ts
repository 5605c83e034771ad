import { isIP } from 'node:net';
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

/**
 * The client's address: the socket's peer or, behind a trusted proxy (`TRUST_PROXY=1`), the last
 * `X-Forwarded-For` entry: the one that proxy appended (HAProxy's `option forwardfor`, nginx's
 * `$proxy_add_x_forwarded_for`). Entries before it are whatever the client sent, so taking the
 * first let anyone lock another address out, or dodge the limit with a new address per try.
 * A last entry that is not an IP address is ignored (it would also become a Redis key).
 */
export function clientAddress(
  handshake: { address: string; headers: Record<string, string | string[] | undefined> },
  trustProxy: boolean,
): string {
  const peer = unmapped(handshake.address);
  if (!trustProxy) return peer;
  const forwarded = handshake.headers['x-forwarded-for'];
  const entries = (Array.isArray(forwarded) ? forwarded.join(',') : (forwarded ?? '')).split(',');
  const last = unmapped(entries[entries.length - 1]?.trim() ?? '');
  return isIP(last) !== 0 ? last : peer;
}

/** `::ffff:1.2.3.4` (an IPv4 peer of a dual-stack socket) as `1.2.3.4`. */
const unmapped = (address: string): string => address.replace(/^::ffff:/, '');

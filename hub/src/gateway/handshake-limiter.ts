import { isIP } from 'node:net';
import { AppError } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';

const WINDOW_MS = 60_000;

/**
 * Counts failed sidecar handshakes per client address, cluster-wide (in Redis), and refuses an
 * address over the limit with `E_RATE_LIMITED` for the rest of the minute, before any token is
 * checked: guessing tokens costs a minute per `limit` tries on every replica together. An IPv6
 * address counts as its /64 ({@link limitedNetwork}).
 */
export class HandshakeLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly limit: number,
  ) {}

  async check(address: string): Promise<void> {
    const key = this.keys.authFailures(limitedNetwork(address));
    const failures = Number((await this.redis.get(key)) ?? 0);
    if (failures >= this.limit) {
      throw new AppError(
        'E_RATE_LIMITED',
        'too many failed handshakes from this address; retry in a minute',
      );
    }
  }

  async recordFailure(address: string): Promise<void> {
    const key = this.keys.authFailures(limitedNetwork(address));
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

/**
 * What the limit counts an address as: an IPv6 address as its /64 (`2001:db8:1:2::/64`), any
 * other as it is. An IPv6 client is given a whole /64 (a home, a cloud VM) and may send from any
 * address in it, so counting each address alone gave it 2^64 allowances of `limit` guesses.
 */
export function limitedNetwork(address: string): string {
  if (isIP(address) !== 6) return address;
  const [head = '', tail] = address.replace(/%.*$/, '').split('::');
  const groups = (part: string | undefined): string[] =>
    // a dotted IPv4 tail (`::1.2.3.4`) takes the last two groups
    part ? part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : [];
  const front = groups(head);
  const back = groups(tail);
  const all = [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back];
  const prefix = all.slice(0, 4).map((g) => parseInt(g, 16).toString(16));
  return `${prefix.join(':')}::/64`;
}

/** `::ffff:1.2.3.4` (an IPv4 peer of a dual-stack socket) as `1.2.3.4`. */
const unmapped = (address: string): string => address.replace(/^::ffff:/, '');

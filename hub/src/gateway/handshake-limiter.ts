import { isIP } from 'node:net';
import { AppError } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';

const WINDOW_MS = 60_000;

/** Token checks of one address (network) in flight on this replica, and who waits for one. */
interface InFlight {
  count: number;
  waiting: Array<() => void>;
}

/**
 * Counts failed sidecar handshakes per client address, cluster-wide (in Redis), and refuses an
 * address over the limit with `E_RATE_LIMITED` for the rest of the minute, before any token is
 * checked: guessing tokens costs a minute per `limit` tries on every replica together. An IPv6
 * address counts as its /64 ({@link limitedNetwork}).
 *
 * A failure is counted once its check has failed, so checks sent together would all read the
 * count from before any of them: one client opening connections first and then sending a
 * handshake on each at once had every token checked, whatever the limit. On each replica the
 * checks in flight of an address count as failures to come: a check starts only while the
 * failures recorded plus the checks in flight are under the limit, and waits for one to end
 * otherwise (then reads the count again). Honest agents sharing an address (a NAT) reconnecting
 * together wait for each other a few milliseconds each; a burst of guesses gets at most `limit`
 * checks per replica past a count it has not reached yet.
 */
export class HandshakeLimiter {
  private readonly inFlight = new Map<string, InFlight>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly limit: number,
  ) {}

  /**
   * Runs `check` (the token check of a handshake from `address`) within the limit: refused with
   * `E_RATE_LIMITED` when the address is over it, counted as a failure when it throws an
   * {@link AppError} (any other error is the replica's, not the client's).
   */
  async run<T>(address: string, check: () => Promise<T>): Promise<T> {
    const network = limitedNetwork(address);
    const key = this.keys.authFailures(network);
    const slot = await this.acquire(network, key);
    try {
      return await check();
    } catch (err) {
      if (err instanceof AppError) {
        await this.redis.multi().incr(key).pexpire(key, WINDOW_MS, 'NX').exec();
      }
      throw err;
    } finally {
      slot.release();
    }
  }

  private async acquire(network: string, key: string): Promise<{ release(): void }> {
    for (;;) {
      let failures: number;
      try {
        failures = Number((await this.redis.get(key)) ?? 0);
      } catch (err) {
        // Redis failed this one: the next one waiting asks for itself (none is left waiting)
        const flight = this.inFlight.get(network);
        if (flight) this.wakeNext(network, flight);
        throw err;
      }
      const flight = this.inFlight.get(network) ?? { count: 0, waiting: [] };
      if (failures >= this.limit) {
        // the next one waiting learns it too (each refusal wakes one: none is left waiting)
        this.wakeNext(network, flight);
        throw new AppError(
          'E_RATE_LIMITED',
          'too many failed handshakes from this address; retry in a minute',
        );
      }
      this.inFlight.set(network, flight);
      if (failures + flight.count < this.limit) {
        flight.count++;
        return {
          release: () => {
            flight.count--;
            this.wakeNext(network, flight);
          },
        };
      }
      await new Promise<void>((resolve) => flight.waiting.push(resolve));
    }
  }

  /** Wakes the check waiting longest (it reads the count again); forgets an address left idle. */
  private wakeNext(network: string, flight: InFlight): void {
    flight.waiting.shift()?.();
    if (flight.count === 0 && flight.waiting.length === 0) this.inFlight.delete(network);
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

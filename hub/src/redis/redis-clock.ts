import type { Redis } from 'ioredis';

/** A measurement answered slower than this (a stall) is kept only while there is no other. */
export const SLOW_ANSWER_MS = 1000;

export interface RedisClockOptions {
  redis: Redis;
  /** This machine's clock (ms since the epoch). Default `Date.now`; tests skew it. */
  localNow?: () => number;
}

/**
 * Redis's clock, read without a round trip: the local clock plus the offset last measured
 * ({@link measure}). Every time one replica writes to Redis and another compares (ack and run
 * deadlines, rests, disconnects, liveness) is on it, so replicas whose machines' clocks disagree
 * still agree on when a deadline passes. A write does not ask Redis its time first: that delayed
 * each write by a round trip, and after a Redis stall a sweep sent at the same moment found the
 * scores from before it.
 */
export class RedisClock {
  private readonly redis: Redis;
  private readonly localNow: () => number;
  /** Redis's clock minus this machine's (ms), as last measured; undefined until then. */
  private offset: number | undefined;

  constructor(options: RedisClockOptions) {
    this.redis = options.redis;
    this.localNow = options.localNow ?? Date.now;
  }

  /** Redis's time now (ms), as of the last measurement; the local clock until the first one. */
  readonly now = (): number => this.localNow() + (this.offset ?? 0);

  get measured(): boolean {
    return this.offset !== undefined;
  }

  /**
   * Measures Redis's clock against this machine's (`TIME`, taken as read halfway through the
   * round trip) and keeps the offset; one answered slowly (a stall: the halfway guess may be off
   * by seconds) is not kept once one was. Returns the offset kept.
   */
  async measure(): Promise<number> {
    const sentAt = this.localNow();
    const [seconds, micros] = await this.redis.time();
    const receivedAt = this.localNow();
    const redisAt = Number(seconds) * 1000 + Number(micros) / 1000;
    const offset = Math.round(redisAt - (sentAt + receivedAt) / 2);
    if (this.offset === undefined || receivedAt - sentAt <= SLOW_ANSWER_MS) this.offset = offset;
    return this.offset;
  }
}

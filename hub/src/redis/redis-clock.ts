import type { Redis } from 'ioredis';

/** A measurement answered slower than this (a stall) is kept only while there is no other. */
export const SLOW_ANSWER_MS = 1000;

/**
 * How fast this machine's monotonic clock may drift from Redis's, at most (ms per ms): 1000 ppm,
 * twice the fastest NTP slew. A kept measurement's error grows by this much as it ages.
 */
export const MAX_DRIFT = 0.001;

/**
 * How far the machine's clock may move against its monotonic clock between two measurements
 * before the clock is measured again at once (ms): a step (NTP, an operator) or a suspended
 * machine, which stops the monotonic clock.
 */
export const STEP_MS = 1000;

/** Measurements {@link RedisClock.measure} makes, at most, while only slow ones were answered. */
export const MEASURE_TRIES = 3;

export interface RedisClockOptions {
  redis: Redis;
  /** This machine's clock (ms since the epoch). Default `Date.now`; tests skew it. */
  localNow?: () => number;
  /**
   * This machine's monotonic clock (ms), which elapsed times are read on. Default
   * `performance.now`; tests stop it, as a suspended machine does.
   */
  monotonicNow?: () => number;
}

/**
 * Redis's clock, read without a round trip: the time Redis answered at the measurement kept
 * ({@link measure}), plus the time elapsed since on this machine's monotonic clock. Every time
 * one replica writes to Redis and another compares (ack and run deadlines, rests, disconnects,
 * liveness) is on it, so replicas whose machines' clocks disagree still agree on when a deadline
 * passes. A write does not ask Redis its time first: that delayed each write by a round trip,
 * and after a Redis stall a sweep sent at the same moment found the scores from before it.
 *
 * - Elapsed time is monotonic: a step of the machine's clock (NTP, an operator) does not move
 *   this one (as the local clock plus an offset, it moved with it until the next measurement: a
 *   sweep 60 s ahead took every other replica for gone and timed their acks out at once).
 * - A measurement is as good as half its round trip (the time is taken as read halfway through
 *   it). One is kept only when no worse than the one kept, aged by {@link MAX_DRIFT}: one a stall
 *   slowed, under a second too, does not move the clock by half the stall.
 * - A measurement answered slower than {@link SLOW_ANSWER_MS}, at the start (Redis stalling
 *   or still connecting), is measured again, {@link MEASURE_TRIES} times at most.
 * - When the machine's clock moves against the monotonic one by over {@link STEP_MS} (a step, or
 *   a suspended machine, whose monotonic clock stopped), the clock is measured again at once,
 *   its next prompt answer kept; {@link suspect} until then (the sweep waits for it).
 */
export class RedisClock {
  private readonly redis: Redis;
  private readonly localNow: () => number;
  private readonly monotonicNow: () => number;
  /** Redis's time minus the monotonic clock's, as kept (ms); undefined until measured. */
  private base: number | undefined;
  /** How far `base` was off at most when measured: half its round trip (ms). */
  private error = Infinity;
  /** The monotonic time the kept measurement was taken at. */
  private keptAt = 0;
  /** The machine's clock minus the monotonic one when the kept measurement was taken. */
  private localMinusMonotonic = 0;
  private stepped = false;
  private remeasuring: Promise<unknown> | undefined;

  constructor(options: RedisClockOptions) {
    this.redis = options.redis;
    this.localNow = options.localNow ?? Date.now;
    this.monotonicNow = options.monotonicNow ?? (() => performance.now());
  }

  /** Redis's time now (ms), as of the measurement kept; the local clock until the first one. */
  readonly now = (): number => {
    if (this.base === undefined) return this.localNow();
    const monotonic = this.monotonicNow();
    if (
      !this.stepped &&
      Math.abs(this.localMinusMonotonic - (this.localNow() - monotonic)) > STEP_MS
    ) {
      this.stepped = true;
      this.remeasuring ??= this.measure()
        .catch(() => undefined)
        .finally(() => {
          this.remeasuring = undefined;
        });
    }
    // whole milliseconds, as Date.now(): times go to Redis as PX arguments, hash fields, stamps
    return Math.floor(this.base + monotonic);
  };

  get measured(): boolean {
    return this.base !== undefined;
  }

  /**
   * True until a prompt measurement is kept: none was, or the machine's clock stepped (or slept)
   * since the last one. Its time may then be off by more than a round trip.
   */
  get suspect(): boolean {
    if (this.base !== undefined) this.now(); // notices a step
    return this.base === undefined || this.stepped || this.error > SLOW_ANSWER_MS / 2;
  }

  /**
   * Measures Redis's clock against this machine's (`TIME`, taken as read halfway through the
   * round trip) and keeps the measurement if it is the better one (see the class); measures again
   * while the clock is {@link suspect}, {@link MEASURE_TRIES} times at most. Returns Redis's clock
   * minus the machine's (ms).
   */
  async measure(): Promise<number> {
    for (let tries = 1; ; tries++) {
      await this.sample();
      if (!this.suspect || tries >= MEASURE_TRIES) return this.now() - this.localNow();
    }
  }

  private async sample(): Promise<void> {
    const sentAt = this.monotonicNow();
    const [seconds, micros] = await this.redis.time();
    const receivedAt = this.monotonicNow();
    const redisAt = Number(seconds) * 1000 + Number(micros) / 1000;
    const at = (sentAt + receivedAt) / 2;
    const error = (receivedAt - sentAt) / 2;
    const prompt = error <= SLOW_ANSWER_MS / 2;
    const keptError = this.error + (at - this.keptAt) * MAX_DRIFT;
    const keep =
      this.base === undefined ||
      (this.stepped && prompt) ||
      ((prompt || this.error > SLOW_ANSWER_MS / 2) && error <= keptError);
    if (!keep) return;
    this.base = redisAt - at;
    this.error = error;
    this.keptAt = at;
    this.localMinusMonotonic = this.localNow() - this.monotonicNow();
    this.stepped = false;
  }
}

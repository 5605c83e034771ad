/**
 * The pace a sidecar's log batches keep (bytes of lines as JSON), after a burst of
 * {@link LOG_BURST_BYTES}: the hub counts every frame's reading and decoding against the
 * connection's budget (1,000, refilled at 100 a second) and closes a connection that spends it. A
 * log batch of 1 MiB counts ~35-45, up to ~83 for lines of control characters (6 bytes of JSON
 * each), so a task printing flat out (over ~1.5 MiB a second) had its sidecar's connection closed.
 * At this pace a log stream spends at most ~42 a second of the refill, and a burst at most ~330
 * of the budget, which leaves a task's ordinary output (up to 4 MiB) undelayed.
 *
 * One pace per sidecar, shared by its tasks' batchers (`TaskController`), as the hub's budget is
 * one per connection: a pace per task gave each task a whole burst, and a few log-heavy tasks in
 * a row (or one ending while the next starts) had the connection closed.
 */
export const LOG_BYTES_PER_SECOND = 512 * 1024;
export const LOG_BURST_BYTES = 4 * 1024 * 1024;

export interface LogPaceOptions {
  /** Bytes a second. Default {@link LOG_BYTES_PER_SECOND}. */
  bytesPerSecond?: number;
  /** Bytes at once, beyond the pace. Default {@link LOG_BURST_BYTES}. */
  burstBytes?: number;
}

/** A token bucket of bytes: batches spend it, time refills it up to the burst. */
export class LogPace {
  private readonly bytesPerSecond: number;
  private readonly burstBytes: number;
  /** Bytes a batch may take now (negative: a batch took more, the next waits); as of `at`. */
  private allowance: number;
  private at = performance.now();

  constructor(options: LogPaceOptions = {}) {
    this.bytesPerSecond = options.bytesPerSecond ?? LOG_BYTES_PER_SECOND;
    this.burstBytes = options.burstBytes ?? LOG_BURST_BYTES;
    this.allowance = this.burstBytes;
  }

  /** Milliseconds until the next batch may go (0: now). */
  delayMs(): number {
    const now = performance.now();
    const earned = ((now - this.at) / 1000) * this.bytesPerSecond;
    this.allowance = Math.min(this.burstBytes, this.allowance + earned);
    this.at = now;
    return this.allowance >= 0 ? 0 : Math.ceil((-this.allowance / this.bytesPerSecond) * 1000);
  }

  /** A batch of `bytes` went: the next ones wait for them. */
  spend(bytes: number): void {
    this.allowance -= bytes;
  }
}

import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_LOG_LINES, MAX_LOG_LINE_BYTES } from '@agentcom/shared';

export interface LogBatcherOptions {
  /**
   * How long a line may wait for others before its batch is sent, and the pause after a batch that
   * was not taken before the next one. Default 250 ms.
   */
  flushMs?: number;
  /** Lines held while a batch is in flight; beyond it new lines are counted and dropped. Default 1000. */
  maxBuffered?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ELLIPSIS = encoder.encode('…');

/**
 * Groups a task's output lines into `task:log` batches of at most {@link MAX_LOG_LINES} lines,
 * each line cut to {@link MAX_LOG_LINE_BYTES} bytes of UTF-8. One batch is in flight at a time;
 * a task that prints faster than the hub takes it loses lines, replaced by one
 * `[agentcom: N log lines dropped]` line. Logs are best-effort: a failed send is not retried.
 *
 * `send` rejects when the batch was not taken: refused (`E_RATE_LIMITED`, ...), unanswered, or
 * not connected. The next batch then waits `flushMs`, however many lines are waiting, and the
 * batch in flight lasts until then: a task printing faster than a refusing hub lets through keeps
 * its buffer full and drops lines, rather than having the hub refuse it batch after batch (a
 * connection refused over 1,000 times, then 100 a second, is closed by the hub).
 */
export class LogBatcher {
  private buffer: string[] = [];
  private dropped = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private readonly flushMs: number;
  private readonly maxBuffered: number;

  constructor(
    private readonly send: (lines: string[]) => Promise<void>,
    options: LogBatcherOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 250;
    this.maxBuffered = options.maxBuffered ?? 10 * MAX_LOG_LINES;
  }

  push(line: string): void {
    if (this.buffer.length >= this.maxBuffered) {
      this.dropped++;
      return;
    }
    this.buffer.push(fitLine(line));
    if (this.buffer.length >= MAX_LOG_LINES) this.pump();
    else this.timer ??= setTimeout(() => this.pump(), this.flushMs);
  }

  /** Sends everything buffered; settles when done or after `timeoutMs`, whichever is first. */
  async close(timeoutMs: number): Promise<void> {
    let expired = false;
    let deadline: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      deadline = setTimeout(() => {
        expired = true;
        resolve();
      }, timeoutMs);
    });
    try {
      while (!expired && (this.pending() || this.inFlight !== undefined)) {
        this.pump();
        await Promise.race([this.inFlight, timedOut]);
      }
    } finally {
      clearTimeout(deadline);
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private pending(): boolean {
    return this.buffer.length > 0 || this.dropped > 0;
  }

  private pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight !== undefined || !this.pending()) return;
    const lines: string[] = [];
    if (this.dropped > 0) {
      lines.push(`[agentcom: ${this.dropped} log lines dropped]`);
      this.dropped = 0;
    }
    lines.push(...this.buffer.splice(0, MAX_LOG_LINES - lines.length));
    this.inFlight = this.send(lines)
      .catch(() => sleep(this.flushMs))
      .finally(() => {
        this.inFlight = undefined;
        if (this.buffer.length >= MAX_LOG_LINES) this.pump();
        else if (this.pending()) this.timer ??= setTimeout(() => this.pump(), this.flushMs);
      });
  }
}

/** Cuts `line` to at most {@link MAX_LOG_LINE_BYTES} bytes of UTF-8, never inside a character. */
export function fitLine(line: string): string {
  if (line.length * 3 <= MAX_LOG_LINE_BYTES) return line;
  const bytes = new Uint8Array(MAX_LOG_LINE_BYTES);
  if (encoder.encodeInto(line, bytes).read === line.length) return line;
  const { written } = encoder.encodeInto(line, bytes.subarray(0, bytes.length - ELLIPSIS.length));
  bytes.set(ELLIPSIS, written);
  // Decoded from its own bytes, the cut line is a string of its own. `line.slice()` would be a
  // view that keeps all of `line` alive for as long as the cut line is buffered, so the buffer's
  // bound would hold whole lines of any length.
  return decoder.decode(bytes.subarray(0, written + ELLIPSIS.length));
}

import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_LOG_LINES, MAX_LOG_LINE_BYTES, MAX_MESSAGE_BYTES } from '@agentcom/shared';

export interface LogBatcherOptions {
  /**
   * How long a line may wait for others before its batch is sent, and the pause after a batch that
   * was not taken before the next one. Default 250 ms.
   */
  flushMs?: number;
  /** Lines held while a batch is in flight; beyond it new lines are counted and dropped. Default 1000. */
  maxBuffered?: number;
}

/**
 * The most a batch's lines may take as JSON, half the hub's frame limit (the rest is room for the
 * envelope and Socket.IO's framing). 100 lines of 8 KiB are 800 KiB as plain text, but a control
 * character is 6 bytes of JSON (`\u001b`): 100 lines of terminal escapes or binary output came to
 * about 4.8 MB, and a frame over the limit makes the hub close the connection.
 */
export const MAX_LOG_BATCH_JSON_BYTES = MAX_MESSAGE_BYTES / 2;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ELLIPSIS = encoder.encode('…');

/**
 * Groups a task's output lines into `task:log` batches of at most {@link MAX_LOG_LINES} lines
 * and {@link MAX_LOG_BATCH_JSON_BYTES} of JSON, each line cut to {@link MAX_LOG_LINE_BYTES} bytes
 * of UTF-8. One batch is in flight at a time;
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
    lines.push(...this.buffer.splice(0, batchLength(this.buffer, MAX_LOG_LINES - lines.length)));
    this.inFlight = this.send(lines)
      .catch(() => sleep(this.flushMs))
      .finally(() => {
        this.inFlight = undefined;
        if (this.buffer.length >= MAX_LOG_LINES) this.pump();
        else if (this.pending()) this.timer ??= setTimeout(() => this.pump(), this.flushMs);
      });
  }
}

/**
 * How many of `lines`, from the first, make a batch: at most `maxLines`, and no more than
 * {@link MAX_LOG_BATCH_JSON_BYTES} as JSON (one line at least: a cut line is at most 48 KiB of it).
 */
function batchLength(lines: readonly string[], maxLines: number): number {
  let bytes = 0;
  const limit = Math.min(maxLines, lines.length);
  for (let count = 0; count < limit; count++) {
    bytes += Buffer.byteLength(JSON.stringify(lines[count])) + 1;
    if (bytes > MAX_LOG_BATCH_JSON_BYTES) return Math.max(1, count);
  }
  return limit;
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

import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_LOG_LINES, MAX_LOG_LINE_BYTES, MAX_MESSAGE_BYTES } from '@agentcom/shared';
import { LogPace } from './log-pace';

export interface LogBatcherOptions {
  /**
   * How long a line may wait for others before its batch is sent, and the pause after a batch that
   * was not taken before the next one. Default 250 ms.
   */
  flushMs?: number;
  /** Lines held while a batch is in flight; beyond it new lines are counted and dropped. Default 1000. */
  maxBuffered?: number;
  /** The pace the batches keep, shared with the sidecar's other tasks. Default: one of its own. */
  pace?: LogPace;
}

/**
 * The longest a task's end ({@link LogBatcher.close}) waits for the pace: its report is sent after
 * the close, so the lines the pace would hold longer are dropped, with the line that says how
 * many, rather than holding the report (up to the ack timeout, 10 s, when lines were left in the
 * buffer at that deadline, without a word).
 */
export const CLOSE_PACE_WAIT_MS = 1000;

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
 * of UTF-8. One batch is in flight at a time, and the batches keep a pace
 * ({@link LogPace}); a task that prints faster than that, or than the hub takes
 * them, loses lines, replaced by one
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
  private paceTimer: NodeJS.Timeout | undefined;
  private readonly flushMs: number;
  private readonly maxBuffered: number;
  private readonly pace: LogPace;

  constructor(
    private readonly send: (lines: string[]) => Promise<void>,
    options: LogBatcherOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 250;
    this.maxBuffered = options.maxBuffered ?? 10 * MAX_LOG_LINES;
    this.pace = options.pace ?? new LogPace();
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

  /**
   * Sends everything buffered; settles when done or after `timeoutMs`, whichever is first. What
   * the pace would hold past {@link CLOSE_PACE_WAIT_MS} is dropped, said in one last line.
   */
  async close(timeoutMs: number): Promise<void> {
    const paceUntil = performance.now() + Math.min(CLOSE_PACE_WAIT_MS, timeoutMs);
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
        const idle = this.inFlight === undefined && this.buffer.length > 0;
        if (idle && performance.now() + this.pace.delayMs() > paceUntil) this.dropBuffered();
        this.pump();
        const paced = () => sleep(Math.max(1, this.pace.delayMs()), undefined, { ref: false });
        await Promise.race([this.inFlight ?? paced(), timedOut]);
      }
    } finally {
      clearTimeout(deadline);
      clearTimeout(this.timer);
      this.timer = undefined;
      clearTimeout(this.paceTimer);
      this.paceTimer = undefined;
    }
  }

  private pending(): boolean {
    return this.buffer.length > 0 || this.dropped > 0;
  }

  /** Drops the buffered lines (counted: the next batch says how many) and the wait for the pace. */
  private dropBuffered(): void {
    this.dropped += this.buffer.length;
    this.buffer = [];
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
  }

  private pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight !== undefined || this.paceTimer !== undefined || !this.pending()) return;
    // the line saying how many were dropped goes alone at once: a few bytes
    const wait = this.buffer.length > 0 ? this.pace.delayMs() : 0;
    if (wait > 0) {
      this.paceTimer = setTimeout(() => {
        this.paceTimer = undefined;
        this.pump();
      }, wait);
      return;
    }
    const lines: string[] = [];
    if (this.dropped > 0) {
      lines.push(`[agentcom: ${this.dropped} log lines dropped]`);
      this.dropped = 0;
    }
    const batch = batchOf(this.buffer, MAX_LOG_LINES - lines.length);
    lines.push(...this.buffer.splice(0, batch.count));
    this.pace.spend(batch.bytes);
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
 * How many of `lines`, from the first, make a batch, and their bytes as JSON: at most `maxLines`,
 * and no more than {@link MAX_LOG_BATCH_JSON_BYTES} (one line at least: a cut line is at most
 * 48 KiB of it).
 */
function batchOf(lines: readonly string[], maxLines: number): { count: number; bytes: number } {
  let bytes = 0;
  const limit = Math.min(maxLines, lines.length);
  for (let count = 0; count < limit; count++) {
    const line = Buffer.byteLength(JSON.stringify(lines[count])) + 1;
    if (bytes + line > MAX_LOG_BATCH_JSON_BYTES && count > 0) return { count, bytes };
    bytes += line;
  }
  return { count: limit, bytes };
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

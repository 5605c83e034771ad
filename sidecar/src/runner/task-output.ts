import { MAX_LOG_LINE_BYTES, MAX_PAYLOAD_BYTES, boundedJsonSchema } from '@agentcom/shared';
import type { RunOutcome } from './task-runner';

/** The longest output line a runner holds, as the log path cuts lines (see `fitLine`). */
export const MAX_OUTPUT_LINE_BYTES = MAX_LOG_LINE_BYTES;
/**
 * The longest stdout line the exec runner holds: its last line may be a result of up to
 * {@link MAX_PAYLOAD_BYTES} as compact JSON, with room for the whitespace and escapes a handler
 * may write in it. Log lines are cut further on the log path.
 */
export const MAX_STDOUT_LINE_BYTES = 2 * MAX_PAYLOAD_BYTES;

/** How many of the last stderr lines go into a failure message, and how long each may be. */
export const STDERR_TAIL_LINES = 20;
const STDERR_LINE_CHARS = 2000;
/** `task:fail` accepts at most 64 KiB of error text. */
const MAX_ERROR_CHARS = 64 * 1024;

/** Keeps the last {@link STDERR_TAIL_LINES} non-empty lines of a stream. */
export class LineTail {
  private readonly lines: string[] = [];

  constructor(private readonly size = STDERR_TAIL_LINES) {}

  push(line: string): void {
    if (line.trim() === '') return;
    this.lines.push(line.length > STDERR_LINE_CHARS ? `${copyOf(cutChars(line))}…` : line);
    if (this.lines.length > this.size) this.lines.shift();
  }

  text(): string {
    return this.lines.join('\n');
  }
}

/** The first {@link STDERR_LINE_CHARS} UTF-16 units of `line`, not ending inside a surrogate pair. */
function cutChars(line: string): string {
  const last = line.charCodeAt(STDERR_LINE_CHARS - 1);
  return line.slice(
    0,
    last >= 0xd800 && last <= 0xdbff ? STDERR_LINE_CHARS - 1 : STDERR_LINE_CHARS,
  );
}

/**
 * `text` as a string of its own. A slice of a string is a view that keeps the whole original
 * alive; decoded from bytes, the copy references nothing, so a kept cut line costs its length.
 */
function copyOf(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8');
}

/** The last non-empty stdout line of a task, and whether it was cut (see {@link MAX_STDOUT_LINE_BYTES}). */
export interface LastLine {
  text: string;
  cut: boolean;
}

/**
 * The outcome of a task process that ended by itself.
 * - exit 0: complete; the result is the last non-empty stdout line parsed as JSON, or `null`
 *   when that line is not JSON (or there is none). A JSON result too large or too deep for the
 *   protocol fails the task, not retryable.
 * - non-zero exit or a signal: fail, retryable, with the stderr tail as the message.
 */
export function exitOutcome(
  code: number | null,
  signal: NodeJS.Signals | null,
  lastStdoutLine: LastLine | undefined,
  stderrTail: string,
): RunOutcome {
  if (code === 0) return completion(lastStdoutLine);
  const what = code !== null ? `exit code ${code}` : `killed by signal ${signal ?? 'unknown'}`;
  return {
    type: 'fail',
    error: truncate(stderrTail === '' ? what : `${what}: ${stderrTail}`),
    retryable: true,
    kind: 'error',
  };
}

function completion(lastLine: LastLine | undefined): RunOutcome {
  if (lastLine === undefined) return { type: 'complete', result: null };
  if (lastLine.cut) {
    // Only its start was kept: a line that begins like a JSON object, array or string is taken
    // for a result too large for the protocol; anything else is no result, as before.
    if (!/^\s*[[{"]/.test(lastLine.text)) return { type: 'complete', result: null };
    return {
      type: 'fail',
      error: `the result (last stdout line) is not acceptable: it is longer than ${MAX_STDOUT_LINE_BYTES} bytes`,
      retryable: false,
      kind: 'error',
    };
  }
  let value: unknown;
  try {
    value = JSON.parse(lastLine.text);
  } catch {
    return { type: 'complete', result: null };
  }
  const checked = boundedJsonSchema.safeParse(value);
  if (!checked.success) {
    return {
      type: 'fail',
      error: `the result (last stdout line) is not acceptable: ${checked.error.issues[0]?.message ?? 'invalid'}`,
      retryable: false,
      kind: 'error',
    };
  }
  return { type: 'complete', result: value };
}

export function truncate(text: string, max = MAX_ERROR_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

import { boundedJsonSchema } from '@agentcom/shared';
import type { RunOutcome } from './task-runner';

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
    this.lines.push(
      line.length > STDERR_LINE_CHARS ? `${line.slice(0, STDERR_LINE_CHARS)}…` : line,
    );
    if (this.lines.length > this.size) this.lines.shift();
  }

  text(): string {
    return this.lines.join('\n');
  }
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
  lastStdoutLine: string | undefined,
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

function completion(lastLine: string | undefined): RunOutcome {
  if (lastLine === undefined) return { type: 'complete', result: null };
  let value: unknown;
  try {
    value = JSON.parse(lastLine);
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

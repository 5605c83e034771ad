import {
  isTerminalTaskState,
  trimmedTaskSchema,
  type TaskView,
  type TrimmedTask,
} from '@agentcom/shared';
import { ApiError, isTransient } from './errors';
import { formatProgress, oneLine } from './format';
import type { HubClient } from './hub-client';

/** How often `task add --wait` polls `GET /v1/tasks/:id`. */
export const WAIT_POLL_MS = 250;
/** How long the hub may be unreachable (or answer 5xx) during a wait before the CLI gives up. */
export const WAIT_TRANSIENT_GRACE_MS = 30_000;

/** Where the progress of a wait goes (stderr): one rewritten line, a line per change, or nothing. */
export interface ProgressSink {
  update(task: TaskView, elapsedMs: number): void;
  /** A passing problem (the hub unreachable for a moment). */
  note(text: string): void;
  /** The wait is over: clear the rewritten line. */
  end(): void;
}

export type ProgressMode = 'tty' | 'lines' | 'quiet';

/**
 * `tty`: one line rewritten in place (`\r`), cut to the terminal's width so it never wraps;
 * `lines`: a line when the state, agent or attempt changes (logs, CI); `quiet`: nothing.
 */
export function progressSink(
  stream: NodeJS.WritableStream,
  mode: ProgressMode,
  columns: () => number | undefined,
): ProgressSink {
  if (mode === 'quiet')
    return { update: () => undefined, note: () => undefined, end: () => undefined };
  if (mode === 'tty') {
    let drawn = false;
    const draw = (text: string): void => {
      const width = Math.max(20, (columns() || 80) - 1); // 0 when the size is unknown
      const line = text.length > width ? `${text.slice(0, width - 1)}…` : text;
      stream.write(`\r\x1b[K${line}`);
      drawn = true;
    };
    return {
      update: (task, elapsedMs) => draw(formatProgress(task, elapsedMs)),
      note: (text) => draw(text),
      end: () => {
        if (drawn) stream.write('\r\x1b[K');
        drawn = false;
      },
    };
  }
  let lastKey = '';
  let lastNote = '';
  return {
    update: (task, elapsedMs) => {
      const key = `${task.state}|${task.agentId ?? ''}|${task.attempt}`;
      if (key === lastKey) return;
      lastKey = key;
      lastNote = '';
      stream.write(`${formatProgress(task, elapsedMs)}\n`);
    },
    note: (text) => {
      if (text === lastNote) return;
      lastNote = text;
      stream.write(`${text}\n`);
    },
    end: () => undefined,
  };
}

export type WaitOutcome =
  | { kind: 'finished'; task: TaskView }
  /** It finished and retention trimmed it before a poll saw it: its outcome only is known. */
  | { kind: 'trimmed'; task: TrimmedTask }
  | { kind: 'timeout'; task: TaskView }
  | { kind: 'interrupted'; task: TaskView | undefined };

export interface WaitOptions {
  intervalMs?: number;
  /** Give up after this long (the task goes on); none: wait until it finishes. */
  timeoutMs?: number;
  transientGraceMs?: number;
  progress: ProgressSink;
  /** Ctrl-C: stop waiting. */
  signal: AbortSignal;
  now?: () => number;
}

/**
 * Polls the task until it is `completed`, `failed` or `cancelled` (or the hub answers that it
 * finished so and is no longer kept: 410 `E_TASK_TRIMMED`), the timeout runs out, or Ctrl-C.
 * A hub unreachable (or answering 5xx) for less than `transientGraceMs` in a row is waited out
 * (a replica restarting behind the load balancer); other errors are thrown. No request outlives
 * the timeout; when it runs out before the hub answered at all, the hub's error is thrown, as
 * there is no task to show.
 */
export async function waitForTask(
  client: Pick<HubClient, 'getTask'>,
  taskId: string,
  options: WaitOptions,
): Promise<WaitOutcome> {
  const now = options.now ?? Date.now;
  const intervalMs = options.intervalMs ?? WAIT_POLL_MS;
  const graceMs = options.transientGraceMs ?? WAIT_TRANSIENT_GRACE_MS;
  const started = now();
  const deadline = options.timeoutMs === undefined ? undefined : started + options.timeoutMs;
  let last: TaskView | undefined;
  /** The error of the latest request, while the hub keeps failing. */
  let failure: unknown;
  /** When the first of the failing requests in a row was sent. */
  let failingSince: number | undefined;
  try {
    for (;;) {
      if (options.signal.aborted) return { kind: 'interrupted', task: last };
      const sentAt = now();
      if (deadline !== undefined && sentAt >= deadline) {
        // `last` is undefined only after failures (the first request goes out before the deadline).
        if (last === undefined) throw failure;
        return { kind: 'timeout', task: last };
      }
      try {
        last = await client.getTask(
          taskId,
          deadline === undefined ? {} : { timeoutMs: deadline - sentAt },
        );
        failure = undefined;
        failingSince = undefined;
        options.progress.update(last, now() - started);
        if (isTerminalTaskState(last.state)) return { kind: 'finished', task: last };
      } catch (err) {
        if (options.signal.aborted) return { kind: 'interrupted', task: last };
        const trimmed = trimmedOutcome(err, taskId);
        if (trimmed) return { kind: 'trimmed', task: trimmed };
        if (!isTransient(err)) throw err;
        failure = err;
        // From when the request was sent: one that times out has taken 30 s to fail.
        failingSince ??= sentAt;
        if (now() - failingSince >= graceMs) throw err;
        // Cut short by the deadline: the wait is over, nothing will be tried again.
        if (deadline === undefined || now() < deadline) {
          const message = err instanceof Error ? err.message : String(err);
          options.progress.note(oneLine(`task ${taskId}: ${message} (trying again)`));
        }
      }
      const pause = deadline === undefined ? intervalMs : Math.min(intervalMs, deadline - now());
      await sleep(Math.max(0, pause), options.signal);
    }
  } finally {
    options.progress.end();
  }
}

/**
 * The outcome of a task the hub no longer keeps (410 `E_TASK_TRIMMED`, its `details`): retention
 * trimmed it between two polls, at high throughput with a small `RETENTION_*_COUNT`.
 */
function trimmedOutcome(err: unknown, taskId: string): TrimmedTask | undefined {
  if (!(err instanceof ApiError) || err.code !== 'E_TASK_TRIMMED') return undefined;
  const details = trimmedTaskSchema.safeParse(err.errorBody.error.details);
  return details.success && details.data.id === taskId ? details.data : undefined;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

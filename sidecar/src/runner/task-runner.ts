import type { CANCEL_REASONS, FailKind, TaskAssign } from '@agentcom/shared';
import type { TaskProcess } from './process-identity';

/**
 * How a task is carried out. `exec` runs a command per task ({@link ExecRunner}); `wake` wakes an
 * agent and waits for it to report through the local IPC ({@link WakeRunner}).
 */
export interface TaskRunner {
  /** Starts the task now. The returned handle's `outcome` never rejects. */
  start(assignment: TaskAssign, sink: RunSink): RunningTask;
}

/** Where a running task's output goes while it runs. */
export interface RunSink {
  /** One line of the task's own output (best-effort task log). */
  log(line: string): void;
  /**
   * The task's process group runs, led by `process` (exec mode): recorded in the state file so a
   * sidecar restarted after a crash can stop it. The task is handed to the process (its stdin)
   * only once the returned promise settles, so the record is durable before the task can run.
   */
  started?(process: TaskProcess): Promise<void> | void;
}

/**
 * Why a task is stopped before it ends by itself: a `task:cancel` reason from the hub, or
 * `shutdown` when the sidecar's drain grace ran out.
 */
export type StopReason = (typeof CANCEL_REASONS)[number] | 'shutdown';

export interface RunningTask {
  /** Settles once the task ended and nothing of it runs any more. */
  readonly outcome: Promise<RunOutcome>;
  /** Stops the task (idempotent; the first reason decides the outcome). */
  stop(reason: StopReason): void;
  /** Kills whatever still runs at once, synchronously: for a process that must exit now. */
  killNow(): void;
}

/**
 * What became of a task: a result to complete it with, a failure to report, or nothing to report
 * because the hub no longer considers this assignment ours (`dropped`).
 */
export type RunOutcome =
  | { type: 'complete'; result: unknown }
  | {
      type: 'fail';
      error: string;
      retryable: boolean;
      kind: FailKind;
      /**
       * Epoch ms on this machine's clock: the agent is rate limited until then (the hub requeues
       * without using an attempt; it is sent as what is left of it, `retryAfterMs`).
       */
      rateLimitedUntil?: number;
    }
  | { type: 'dropped'; reason: StopReason };

/** The outcome of a task stopped for `reason`, whatever its process did meanwhile. */
export function stoppedOutcome(reason: StopReason, timeoutMs: number | undefined): RunOutcome {
  switch (reason) {
    case 'cancelled':
      return { type: 'fail', error: 'cancelled by the hub', retryable: false, kind: 'cancelled' };
    case 'timeout':
      return {
        type: 'fail',
        error:
          timeoutMs === undefined ? 'timed out' : `timed out after ${timeoutMs} ms (timeoutMs)`,
        retryable: true,
        kind: 'timeout',
      };
    case 'shutdown':
      return {
        type: 'fail',
        error: 'the sidecar shut down before the task finished',
        retryable: true,
        kind: 'error',
      };
    case 'lease_lost':
    case 'superseded':
      return { type: 'dropped', reason };
  }
}

/** The longest delay one `setTimeout` holds: a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Stops `task` with `timeout` once the assignment's `timeoutMs` has passed; returns a canceller. */
export function startDeadline(assignment: TaskAssign, task: RunningTask): () => void {
  if (assignment.timeoutMs === undefined) return () => undefined;
  // The protocol bounds no timeoutMs (the API's 7 days do not hold for jobs added to BullMQ
  // directly): a longer one is waited for in steps.
  let left = assignment.timeoutMs;
  let timer: NodeJS.Timeout | undefined;
  const wait = (): void => {
    const step = Math.min(left, MAX_TIMER_MS);
    left -= step;
    timer = setTimeout(() => (left > 0 ? wait() : task.stop('timeout')), step);
  };
  wait();
  return () => clearTimeout(timer);
}

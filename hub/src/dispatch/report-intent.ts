/**
 * The values of a task's finished key (`finished:<taskId>`): the marker of an applied report,
 * and the intent a report records (`beginReport.lua`) before BullMQ's part, from which the replay
 * of a report whose replica died after BullMQ's part tells that BullMQ applied it.
 */
export type ReportOutcome = 'completed' | 'failed';

/** The finished marker of an applied report, `<outcome> <token>`. */
export function finishedMarker(outcome: ReportOutcome, token: string): string {
  return `${outcome} ${token}`;
}

/** A report's intent, as `beginReport.lua` writes it. */
export type ReportIntent =
  /** `completing <token> <queue>` */
  | { outcome: 'completed'; queue: string }
  /** `failing <token> <queue> <attemptsMade> <stalledCount>`: the job's counts before BullMQ's part */
  | { outcome: 'failed'; queue: string; attemptsMade: number; stalledCount: number };

/** The intent `marker` (a finished key's value) records when it is `token`'s; undefined otherwise. */
export function reportIntent(marker: string, token: string): ReportIntent | undefined {
  const completing = `completing ${token} `;
  if (marker.startsWith(completing)) {
    return { outcome: 'completed', queue: marker.slice(completing.length) };
  }
  const failing = `failing ${token} `;
  if (!marker.startsWith(failing)) return undefined;
  const [queue = '', attemptsMade, stalledCount] = marker.slice(failing.length).split(' ');
  return {
    outcome: 'failed',
    queue,
    attemptsMade: Number(attemptsMade),
    stalledCount: Number(stalledCount),
  };
}

/** What a failure's replay reads of its job (BullMQ's hash and lock). */
export interface JobCounts {
  exists: boolean;
  attemptsMade: number;
  stalledCount: number;
  /** The job's lock: the token of the assignment that holds it, if any. */
  lock: string | undefined;
}

/**
 * Whether BullMQ took the failure `intent` was written for, as the job shows it now: the failure
 * freed the job from `token`'s lock and counted an attempt (unless `usesAttempt` is false: a
 * quota puts the job back to wait without one), and the job did not stall since. What else frees
 * a job from its agent's lock does neither: the stalled checker counts a stall, putting a task
 * back (a reconnect, a lost lease) uses no attempt (for a quota, whose part does the same, it
 * does not matter which one did). Another assignment's report would have replaced the intent
 * with its own. (A retried job that stalled later under another agent reads as not taken: the
 * replay is then refused, as before intents.)
 */
export function failureTaken(
  intent: Extract<ReportIntent, { outcome: 'failed' }>,
  job: JobCounts,
  token: string,
  usesAttempt: boolean,
): boolean {
  return (
    job.exists &&
    job.lock !== token &&
    job.stalledCount === intent.stalledCount &&
    job.attemptsMade >= intent.attemptsMade + (usesAttempt ? 1 : 0)
  );
}

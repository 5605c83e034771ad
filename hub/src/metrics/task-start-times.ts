import { performance } from 'node:perf_hooks';

/** What {@link TaskStartTimes.added} needs of a job BullMQ's `Queue.add` created. */
export interface AddedJob {
  id?: string | undefined;
  opts: { jobId?: string | undefined; delay?: number | undefined };
}

/** Most tasks whose start one replica remembers (about 100 bytes each). */
const MAX_STARTS = 10_000;

/**
 * When this replica's own tasks became waiting, on its monotonic sub-millisecond clock: the
 * dispatch latency of a task created and first pushed by the same replica is measured from it,
 * finer than BullMQ's millisecond `job.timestamp`. O(1) per task, bounded: a task pushed by
 * another replica is never taken out here, so past `capacity` the oldest start is dropped (that
 * task, if this replica pushes it after all, is measured from `job.timestamp`).
 */
export class TaskStartTimes {
  private readonly starts = new Map<string, number>();

  constructor(
    private readonly capacity = MAX_STARTS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * A job this replica added (BullMQ's `waiting` event of its Queue, emitted once Redis stored
   * it). Left out: a delayed job (waiting only later) and an idempotent duplicate (BullMQ answers
   * the earlier job, whose start was earlier).
   */
  added(job: AddedJob): void {
    if (!job.id || job.id !== job.opts.jobId || (job.opts.delay ?? 0) > 0) return;
    if (this.starts.size >= this.capacity) {
      const oldest = this.starts.keys().next();
      if (!oldest.done) this.starts.delete(oldest.value);
    }
    this.starts.set(job.id, this.now());
  }

  /** Milliseconds since the task was added, if this replica added it; forgets it either way. */
  takeElapsedMs(taskId: string): number | undefined {
    const start = this.starts.get(taskId);
    if (start === undefined) return undefined;
    this.starts.delete(taskId);
    return this.now() - start;
  }

  get size(): number {
    return this.starts.size;
  }
}

import { performance } from 'node:perf_hooks';

/** Most tasks whose start one replica remembers (about 100 bytes each). */
const MAX_STARTS = 10_000;

/**
 * When this replica created its own tasks, on its monotonic sub-millisecond clock: the dispatch
 * latency of a task created and first pushed by the same replica is measured from it, finer than
 * BullMQ's millisecond `job.timestamp` (taken at the same moment: when the job is built, before
 * its add). O(1) per task, bounded: a task pushed by another replica is never taken out here, so
 * past `capacity` the oldest start is dropped (that task, if this replica pushes it after all, is
 * measured from `job.timestamp`).
 */
export class TaskStartTimes {
  private readonly starts = new Map<string, number>();

  constructor(
    private readonly capacity = MAX_STARTS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * A task this replica is about to add, by the id it chose for its job. Taken before the add is
   * sent, not after its reply: a dispatch step already running may push the task before the
   * add's caller resumes (a batch's first tasks, while its last are being answered).
   */
  start(taskId: string): void {
    if (this.starts.size >= this.capacity) {
      const oldest = this.starts.keys().next();
      if (!oldest.done) this.starts.delete(oldest.value);
    }
    this.starts.set(taskId, this.now());
  }

  /** Drops a start whose add created no task: it failed, or BullMQ answered an earlier one. */
  forget(taskId: string): void {
    this.starts.delete(taskId);
  }

  /** Milliseconds since the task was started, if this replica started it; forgets it either way. */
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

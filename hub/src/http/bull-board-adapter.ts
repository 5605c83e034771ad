import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import type { Job, Queue } from 'bullmq';
import type { Logger } from '../logger';
import type { FinishedTaskKey } from '../tasks/finished-task-keys';
import type { IdempotencyKeys } from '../tasks/idempotency-keys';

type JobStatuses = Parameters<BullMQAdapter['getJobs']>[0];
type CleanStatus = Parameters<BullMQAdapter['clean']>[0];

/**
 * How many finished jobs one step of a clean removes (BullMQ's own clean removes up to 10,000 in
 * one script): the step reads their keys first, and sets them again after.
 */
const CLEAN_STEP = 500;
/**
 * How many more of the oldest jobs a step reads: the set may lose some of its oldest between the
 * read and the removal (retention trimming, a retry), and the removal then reaches further.
 */
const CLEAN_MARGIN = 50;

/**
 * Bull Board's view of a task queue: what an operator does to a job there leaves its idempotency
 * key as agentcom's own paths do. Bull Board works on the jobs this adapter hands it (`getJob`,
 * `getJobs`), so those jobs carry the key's handling themselves:
 * - a retry (of one job, and each job of "retry all", failed or completed: Bull Board retries
 *   those a page of 100 at a time) gives the key its ten years again once BullMQ moved the job
 *   back, before Bull Board answers. BullMQ's retry left it to expire 24 h after the task's end,
 *   and a task still waiting then was created twice by a repeated create. A job without a key
 *   costs nothing more; a settle Redis fails is run again later (`IdempotencyKeys`), the answer
 *   stays Bull Board's: the retry was done;
 * - a clean of finished jobs (one job's, or "clean all" of the completed or failed ones) sets
 *   their keys again until 24 h after each task's end (`FinishedTaskKeys`): BullMQ's removal
 *   deleted them, where retention's trimming of the same jobs does not, and a repeated create
 *   within those 24 h created the task again. A job removed before it finished (a clean of
 *   delayed or waiting jobs) frees its key, as in BullMQ: the task is withdrawn, not ended.
 * A promotion (one delayed job, or all of them) moves a task that has not finished to wait: its
 * key holds all the same, nothing to do.
 */
export class TaskQueueAdapter extends BullMQAdapter {
  constructor(
    private readonly taskQueue: Queue,
    private readonly idempotency: IdempotencyKeys,
    private readonly logger: Pick<Logger, 'warn'>,
  ) {
    super(taskQueue);
  }

  override async getJob(id: string): Promise<Job | undefined> {
    const job = await super.getJob(id);
    return job && this.keyed(job);
  }

  override async getJobs(statuses: JobStatuses, start?: number, end?: number): Promise<Job[]> {
    return (await super.getJobs(statuses, start, end)).map((job) => this.keyed(job));
  }

  /**
   * BullMQ's clean, by steps of {@link CLEAN_STEP} for finished jobs: each step reads the keys of
   * the oldest jobs of the set (a step removes the oldest that finished before the grace), removes
   * them, and sets their keys again. A job the step removes that it did not read (more than
   * {@link CLEAN_MARGIN} of the oldest went in between) frees its key, as before.
   */
  override async clean(status: CleanStatus, graceTimeMs: number): Promise<void> {
    if (status !== 'completed' && status !== 'failed') return super.clean(status, graceTimeMs);
    const queue = this.taskQueue;
    for (;;) {
      const oldest = await queue.getRanges([status], 0, CLEAN_STEP + CLEAN_MARGIN - 1, true);
      const held = await this.idempotency.finishedTasks.read(queue.name, oldest);
      const removed = await queue.clean(graceTimeMs, CLEAN_STEP, status);
      await this.putBack(removed, held);
      if (removed.length < CLEAN_STEP) return;
    }
  }

  /** The job, its retry and removal keeping its idempotency key as the class says. */
  private keyed(job: Job): Job {
    const retry = job.retry.bind(job);
    const remove = job.remove.bind(job);
    const { queueName } = job;
    const id = job.id ?? '';
    // own properties, not enumerable: `Job.toJSON` copies the enumerable ones into Bull Board's view
    Object.defineProperties(job, {
      retry: {
        value: async (...args: Parameters<Job['retry']>): Promise<void> => {
          await retry(...args);
          await this.idempotency.settle(queueName, id, job.deduplicationId);
        },
      },
      remove: {
        value: async (...args: Parameters<Job['remove']>): Promise<void> => {
          const held = await this.idempotency.finishedTasks.read(queueName, [id]);
          await remove(...args);
          await this.putBack([id], held);
        },
      },
    });
    return job;
  }

  /** Puts back the keys of the `removed` jobs; one Redis refused stays freed (logged). */
  private async putBack(
    removed: readonly string[],
    held: ReadonlyMap<string, FinishedTaskKey>,
  ): Promise<void> {
    const keys = removed.flatMap((id) => held.get(id) ?? []);
    await this.idempotency.finishedTasks.putBack(keys).catch((err: unknown) => {
      this.logger.warn(
        { queue: this.taskQueue.name, keys: keys.length, err: String(err) },
        'the idempotency keys of finished tasks removed from Bull Board were not put back: freed',
      );
    });
  }
}

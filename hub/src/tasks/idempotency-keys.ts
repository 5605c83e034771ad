import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { RedisKeys } from '../redis/keys';
import { luaScript } from '../redis/scripts';
import { DeferredSettles } from './deferred-settles';
import { FinishedTaskKeys } from './finished-task-keys';

/**
 * How long an idempotency key names its task after the task finished (completed, failed,
 * cancelled), as long as the task's finished marker, from which a repeated create answers the
 * outcome once retention trimmed the task. While the task is not finished the key does not
 * expire.
 */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * The TTL an idempotency key has while its task is not finished: ten years, longer than any task
 * waits (a delay is at most a year). A TTL and not none: BullMQ deletes a deduplication key
 * without expiry as the job completes or fails (its "simple mode"), and a create with the key
 * between that and agentcom's {@link IdempotencyKeys.settle} (one round trip, or for ever if the
 * replica died between) made the task twice; a key with a TTL it leaves to expire.
 */
export const UNFINISHED_IDEMPOTENCY_TTL_MS = 10 * 365 * 24 * 60 * 60 * 1000;

/** See `settleIdempotencyKey.lua`. */
export type SettleReply = 'none' | 'other' | 'held' | 'kept' | 'expired';

/** How many failed settles one {@link IdempotencyKeys.settleDeferred} runs (sent together). */
const DEFERRED_SETTLES_PER_PASS = 500;

export interface IdempotencyKeysOptions {
  redis: Redis;
  keys: RedisKeys;
  /** Where failed settles are reported (none: they are run again all the same). */
  logger?: Logger;
}

/**
 * The lifetime of idempotency keys (BullMQ's deduplication keys). A task is created with its key
 * expiring after {@link UNFINISHED_IDEMPOTENCY_TTL_MS} (BullMQ's TTL mode, which leaves the key
 * alone when the job ends). {@link settle} shortens it to {@link IDEMPOTENCY_TTL_MS} after the
 * end; the scripts that end a task themselves (`completeAtOnce`, `cancelTask`) do the same in the
 * same call. Called after each other end of a task (a failure or a completion applied step by
 * step, a task failed by the dispatcher), and after a retry (the API's, Bull Board's), which
 * gives the key its long TTL again. A settle that fails (Redis refused it) is run again until it
 * goes through ({@link settleDeferred}, on the sweeper's tick): the work it follows is done, and
 * a finished task's key left to its ten years refused every later create with it as a duplicate.
 * A settle that never ran, or was still to run again when its replica died, leaves the key as it
 * was: the long TTL still answers the task.
 */
export class IdempotencyKeys {
  private readonly script = luaScript('settleIdempotencyKey');
  private readonly deferred: DeferredSettles;
  /** The keys of finished tasks an operator removes, kept through the removal. */
  readonly finishedTasks: FinishedTaskKeys;

  constructor(private readonly options: IdempotencyKeysOptions) {
    this.deferred = new DeferredSettles(options.logger);
    this.finishedTasks = new FinishedTaskKeys({ ...options, afterEndMs: IDEMPOTENCY_TTL_MS });
  }

  /**
   * Sets the lifetime of the task's key (`idempotencyKey`, none: nothing to do) from the task's
   * state. The key is the job's `deduplicationId`, read before the task's end: a job that no
   * retention keeps is gone after it. Never throws: a settle Redis fails is `deferred`, run again
   * later (the caller's own work, which it follows, is done and stays so).
   */
  async settle(
    queue: string,
    taskId: string,
    idempotencyKey: string | undefined,
  ): Promise<SettleReply | 'deferred'> {
    if (!idempotencyKey) return 'none';
    try {
      return await this.run(queue, taskId, idempotencyKey);
    } catch (err) {
      this.deferred.add(queue, taskId, idempotencyKey, err);
      return 'deferred';
    }
  }

  /**
   * Runs again the failed settles that are due (`DeferredSettles`), at most
   * {@link DEFERRED_SETTLES_PER_PASS}, sent together (one round trip). Never throws. The
   * script sets the key from the task's state as it is now, so a late settle is as right as a
   * timely one (a task retried meanwhile gets its long TTL; a finished one whose job is gone keeps
   * its key 24 h from this run rather than from its end).
   */
  async settleDeferred(now = Date.now()): Promise<void> {
    const due = this.deferred.due(now, DEFERRED_SETTLES_PER_PASS);
    if (due.length === 0) return;
    const results = await Promise.allSettled(
      due.map((entry) => this.run(entry.queue, entry.taskId, entry.idempotencyKey)),
    );
    let settled = 0;
    due.forEach((entry, i) => {
      if (results[i]?.status === 'fulfilled') {
        settled++;
        this.deferred.done(entry);
      } else {
        this.deferred.failedAgain(entry);
      }
    });
    if (settled > 0) {
      this.options.logger?.info(
        { settled, left: this.deferred.size },
        'deferred idempotency key settles went through',
      );
    }
  }

  private run(queue: string, taskId: string, idempotencyKey: string): Promise<SettleReply> {
    const { redis, keys } = this.options;
    return this.script.run<SettleReply>(
      redis,
      [keys.bullJob(queue, taskId)],
      [
        taskId,
        keys.bullQueuePrefix(queue),
        IDEMPOTENCY_TTL_MS,
        Date.now(),
        idempotencyKey,
        UNFINISHED_IDEMPOTENCY_TTL_MS,
      ],
    );
  }

  /** The idempotency key of a task whose job is not loaded (the step by step completion). */
  async keyOf(queue: string, taskId: string): Promise<string | undefined> {
    const { redis, keys } = this.options;
    return (await redis.hget(keys.bullJob(queue, taskId), 'deid')) ?? undefined;
  }
}

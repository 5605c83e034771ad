import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';
import { luaScript } from '../redis/scripts';

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

/**
 * The lifetime of idempotency keys (BullMQ's deduplication keys). A task is created with its key
 * expiring after {@link UNFINISHED_IDEMPOTENCY_TTL_MS} (BullMQ's TTL mode, which leaves the key
 * alone when the job ends). {@link settle} shortens it to {@link IDEMPOTENCY_TTL_MS} after the
 * end; the scripts that end a task themselves (`completeAtOnce`, `cancelTask`) do the same in the
 * same call. Called after each other end of a task (a failure or a completion applied step by
 * step, a task failed by the dispatcher), and after a retry, which gives the key its long TTL
 * again. A settle that never ran (its replica died) leaves the key to its long TTL: it still
 * answers the task.
 */
export class IdempotencyKeys {
  private readonly script = luaScript('settleIdempotencyKey');

  constructor(private readonly options: { redis: Redis; keys: RedisKeys }) {}

  /**
   * Sets the lifetime of the task's key (`idempotencyKey`, none: nothing to do) from the task's
   * state. The key is the job's `deduplicationId`, read before the task's end: a job that no
   * retention keeps is gone after it.
   */
  async settle(
    queue: string,
    taskId: string,
    idempotencyKey: string | undefined,
  ): Promise<SettleReply> {
    return idempotencyKey ? this.run(queue, taskId, idempotencyKey) : 'none';
  }

  /** {@link settle} for a task whose key is read from its job (Bull Board's retry). */
  async settleStored(queue: string, taskId: string): Promise<SettleReply> {
    return this.run(queue, taskId, '');
  }

  /** `idempotencyKey` "": the script reads it from the job's hash. */
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

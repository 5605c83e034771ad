import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';

/** A finished task's idempotency key, read before the task's removal. */
export interface FinishedTaskKey {
  taskId: string;
  /** The key's Redis name (BullMQ's deduplication key). */
  name: string;
  /** When the task ended (its job's `finishedOn`, the hub's clock). */
  endedAt: number;
}

export interface FinishedTaskKeysOptions {
  redis: Redis;
  keys: RedisKeys;
  /** How long a key outlives its task's end (`IDEMPOTENCY_TTL_MS`). */
  afterEndMs: number;
}

/**
 * The idempotency keys of finished tasks an operator removes (Bull Board's clean). BullMQ's
 * removal deletes a key that names the job it removes, so a repeat of the create within the 24 h
 * after the task's end created the task again; retention's trimming of the same jobs does not
 * (`IdempotencyKeys` sets the key again). Read before the removal, each key is set again after
 * it as a settle sets a finished task's: until 24 h after the task's end, however its job went.
 * A task removed before it finished frees its key, as BullMQ does: none is read here (a job
 * without `finishedOn` has not finished; BullMQ clears it on a retry).
 *
 * Plain commands sent together (one write per turn: `coalesceWrites`), not pipeline objects:
 * measured on 100 settles at a time, an ioredis pipeline cost 30 % more CPU than the same
 * commands sent one by one.
 */
export class FinishedTaskKeys {
  constructor(private readonly options: FinishedTaskKeysOptions) {}

  /**
   * The keys that name finished tasks among `taskIds` of `queue`, by task id: two round trips (the
   * jobs' `deid` and `finishedOn`, then the keys' holders in one MGET).
   */
  async read(queue: string, taskIds: readonly string[]): Promise<Map<string, FinishedTaskKey>> {
    const { redis, keys } = this.options;
    const found = new Map<string, FinishedTaskKey>();
    const jobs = await Promise.all(
      taskIds.map((id) => redis.hmget(keys.bullJob(queue, id), 'deid', 'finishedOn')),
    );
    const named: FinishedTaskKey[] = [];
    jobs.forEach(([deid, finishedOn], i) => {
      const taskId = taskIds[i];
      const endedAt = Number(finishedOn);
      if (!deid || !finishedOn || !Number.isFinite(endedAt) || taskId === undefined) return;
      named.push({ taskId, name: keys.bullDeduplication(queue, deid), endedAt });
    });
    if (named.length === 0) return found;
    const holders = await redis.mget(named.map(({ name }) => name));
    named.forEach((key, i) => {
      if (holders[i] === key.taskId) found.set(key.taskId, key);
    });
    return found;
  }

  /**
   * Sets the keys the removal deleted again, each until {@link FinishedTaskKeysOptions.afterEndMs}
   * after its task's end (one that ran out is left out, as a settle deletes it). A key another
   * task took in between (a create after the removal) stays that task's (NX), as does one the
   * removal left. Rejects when Redis refused any (those keys stay freed).
   */
  async putBack(removed: Iterable<FinishedTaskKey>, now = Date.now()): Promise<void> {
    const { redis, afterEndMs } = this.options;
    const sets: Array<Promise<unknown>> = [];
    for (const { name, taskId, endedAt } of removed) {
      const left = endedAt + afterEndMs - now;
      if (left > 0) sets.push(redis.set(name, taskId, 'PX', left, 'NX'));
    }
    await Promise.all(sets);
  }
}

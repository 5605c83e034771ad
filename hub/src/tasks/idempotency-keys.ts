import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { RedisKeys } from '../redis/keys';
import { luaScript } from '../redis/scripts';
import { DeferredSettles } from './deferred-settles';
import { FinishedTaskKeys } from './finished-task-keys';
import { RecordedSettles, type RecordedSettle } from './recorded-settles';

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
export type SettleReply = 'none' | 'other' | 'held' | 'kept' | 'expired' | 'free';

/**
 * How many failed settles one {@link IdempotencyKeys.settleDeferred} runs (sent together) of
 * those recorded in Redis, and as many of those kept in memory.
 */
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
 * It is recorded in Redis (`RecordedSettles`), where any replica's sweeper runs it, so that it
 * outlives this replica; kept in this replica only while Redis refuses the record too. A settle
 * that never ran (its replica died before, or Redis stopped the report's script before it) is run
 * by the sidecar's replay of the report while the job is kept (`AssignmentService`); otherwise,
 * or kept here when its replica died, it leaves the key as it was: the long TTL still answers the
 * task.
 */
export class IdempotencyKeys {
  private readonly script = luaScript('settleIdempotencyKey');
  /** Failed settles whose record Redis refused too (see {@link defer}). */
  private readonly deferred: DeferredSettles;
  private readonly recorded: RecordedSettles;
  /** A failed settle was logged, and none went through since: the next failure is not logged. */
  private failing = false;
  /** The keys of finished tasks an operator removes, kept through the removal. */
  readonly finishedTasks: FinishedTaskKeys;

  constructor(private readonly options: IdempotencyKeysOptions) {
    this.deferred = new DeferredSettles(options.logger);
    this.recorded = new RecordedSettles(options.redis, options.keys.deferredSettles);
    this.finishedTasks = new FinishedTaskKeys({ ...options, afterEndMs: IDEMPOTENCY_TTL_MS });
  }

  /**
   * Sets the lifetime of the task's key (`idempotencyKey`, none: nothing to do) from the task's
   * state. The key is the job's `deduplicationId`, read before the task's end: a job that no
   * retention keeps is gone after it. Never throws: a settle Redis fails is `deferred`, run again
   * later ({@link defer}; the caller's own work, which it follows, is done and stays so).
   */
  async settle(
    queue: string,
    taskId: string,
    idempotencyKey: string | undefined,
  ): Promise<SettleReply | 'deferred'> {
    if (!idempotencyKey) return 'none';
    try {
      return await this.run(queue, taskId, idempotencyKey, false);
    } catch (err) {
      await this.defer(queue, taskId, idempotencyKey, err);
      return 'deferred';
    }
  }

  /**
   * Keeps a settle that failed with `err` (here, or inside a script that ends a task:
   * `completeAtOnce`, `cancelTask`) to run again on the sweeper's tick ({@link settleDeferred}):
   * recorded in Redis, for any replica to run; kept in this replica when Redis refuses the record
   * too (or holds as many as it keeps), and recorded once Redis takes it. One round trip more, on a
   * failure only. Never throws.
   */
  async defer(queue: string, taskId: string, idempotencyKey: string, err: unknown): Promise<void> {
    const recorded = await this.recorded
      .add(queue, taskId, idempotencyKey, Date.now())
      .catch(() => 'refused' as const);
    if (recorded !== 'recorded') {
      this.deferred.add(queue, taskId, idempotencyKey, err); // logs the first of a streak
      return;
    }
    if (!this.failing) {
      this.failing = true;
      this.options.logger?.warn(
        { queue, taskId, err: String(err) },
        'idempotency key not settled: recorded, run again on the next ticks',
      );
    }
  }

  /**
   * Runs again the failed settles that are due, those recorded in Redis (by any replica:
   * `RecordedSettles`) and those kept in this replica (`DeferredSettles`), at most
   * {@link DEFERRED_SETTLES_PER_PASS} of each, sent together (one round trip, and one more to
   * list the recorded ones: the only command of a tick with none). Never throws. The script sets
   * the key from the task's state as it is now, so a late settle is as right as a timely one (a
   * task retried meanwhile gets its long TTL; a finished one whose job is gone keeps its key 24 h
   * from this run rather than from its end). Run late, the script only shortens a gone job's key,
   * never creates it again: an operator's removal of the task, retried meanwhile, freed it
   * (`settleIdempotencyKey.lua`, ARGV[7]).
   */
  async settleDeferred(now = Date.now()): Promise<void> {
    const [recorded, kept] = await Promise.all([this.runRecorded(now), this.runKept(now)]);
    const settled = recorded.settled + kept.settled;
    if (settled === 0) return;
    if (recorded.failed + kept.failed === 0) this.failing = false;
    this.options.logger?.info(
      { settled, failed: recorded.failed + kept.failed, keptHere: this.deferred.size },
      'deferred idempotency key settles went through',
    );
  }

  /** Runs the due settles recorded in Redis; each that goes through is removed. Never throws. */
  private async runRecorded(now: number): Promise<{ settled: number; failed: number }> {
    let due: RecordedSettle[];
    try {
      due = await this.recorded.due(now, DEFERRED_SETTLES_PER_PASS);
    } catch {
      return { settled: 0, failed: 0 }; // Redis away: the next tick lists them again
    }
    const results = await this.runAll(due);
    // a removal or a new due time that fails leaves the record as it was: run again, to no harm
    await Promise.allSettled(
      due.map((entry, i) =>
        results[i] ? this.recorded.done(entry) : this.recorded.failedAgain(entry, now),
      ),
    );
    return countOf(results);
  }

  /**
   * Runs the due settles kept in this replica; one that fails again is recorded in Redis if it
   * takes the record now (and forgotten here), else kept. Never throws.
   */
  private async runKept(now: number): Promise<{ settled: number; failed: number }> {
    const due = this.deferred.due(now, DEFERRED_SETTLES_PER_PASS);
    if (due.length === 0) return { settled: 0, failed: 0 };
    const results = await this.runAll(due);
    await Promise.all(
      due.map(async (entry, i) => {
        if (results[i]) return this.deferred.done(entry);
        const recorded = await this.recorded
          .add(entry.queue, entry.taskId, entry.idempotencyKey, now)
          .catch(() => 'refused' as const);
        if (recorded === 'recorded') this.deferred.done(entry);
        else this.deferred.failedAgain(entry);
      }),
    );
    return countOf(results);
  }

  /** Runs the settles together: whether each went through. */
  private async runAll(
    entries: ReadonlyArray<{ queue: string; taskId: string; idempotencyKey: string }>,
  ): Promise<boolean[]> {
    const results = await Promise.allSettled(
      entries.map((entry) => this.run(entry.queue, entry.taskId, entry.idempotencyKey, true)),
    );
    return results.map((result) => result.status === 'fulfilled');
  }

  /** Runs the settle script; `late`: a settle that failed, run again (the script's ARGV[7]). */
  private run(
    queue: string,
    taskId: string,
    idempotencyKey: string,
    late: boolean,
  ): Promise<SettleReply> {
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
        late ? '1' : '',
      ],
    );
  }

  /** The idempotency key of a task whose job is not loaded (the step by step completion). */
  async keyOf(queue: string, taskId: string): Promise<string | undefined> {
    const { redis, keys } = this.options;
    return (await redis.hget(keys.bullJob(queue, taskId), 'deid')) ?? undefined;
  }
}

const countOf = (results: boolean[]): { settled: number; failed: number } => {
  const settled = results.filter(Boolean).length;
  return { settled, failed: results.length - settled };
};

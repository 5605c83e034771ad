import type { Redis } from 'ioredis';
import { luaScript } from '../redis/scripts';
import { FIRST_RETRY_MS, MAX_KEPT, MAX_RETRY_MS } from './deferred-settles';

/** A settle of an idempotency key that Redis refused, as recorded in Redis. */
export interface RecordedSettle {
  queue: string;
  taskId: string;
  idempotencyKey: string;
  /** When it first failed (`Date.now()` of the replica that recorded it). */
  since: number;
  /** When it was due, as listed (its score then). */
  dueAt: number;
  /** Its member in the sorted set. */
  member: string;
}

/**
 * The settles of idempotency keys that Redis refused, recorded in Redis (`deferredSettles`, a
 * sorted set scored by when each is due) so that they outlive the replica that recorded them: any
 * replica's sweeper runs the due ones again (`IdempotencyKeys.settleDeferred`) and removes each
 * that goes through. Kept in memory only, a replica killed after a refused settle left the key its
 * ten years, refusing every later create with it as a duplicate. Each waits as long as it has
 * been failing, from 1 s to 5 min: the waits double without a count of failures to keep (a member
 * stays as recorded, so each replica's run of it updates its score only). At most
 * {@link MAX_KEPT}, as many as a replica keeps in memory. Replicas that list the same due settle
 * all run it: the settle sets the key from the task's state as it is then, whoever runs it.
 */
export class RecordedSettles {
  private readonly removeIfDue = luaScript('removeIfDue');

  constructor(
    private readonly redis: Redis,
    /** The sorted set (`RedisKeys.deferredSettles`). */
    private readonly key: string,
  ) {}

  /**
   * Records a settle that failed at `now`, due {@link FIRST_RETRY_MS} later: `full` (not recorded)
   * when {@link MAX_KEPT} are recorded already. Throws when Redis refuses the record.
   */
  async add(
    queue: string,
    taskId: string,
    idempotencyKey: string,
    now: number,
  ): Promise<'recorded' | 'full'> {
    const member = JSON.stringify([queue, taskId, idempotencyKey, now]);
    const replies = await this.redis
      .multi()
      .zadd(this.key, now + FIRST_RETRY_MS, member)
      .zcard(this.key)
      .exec();
    const [added, count] = (replies ?? []).map(([err, reply]) => {
      if (err) throw err;
      return Number(reply);
    });
    if (added === undefined || count === undefined) throw new Error('MULTI aborted');
    if (count <= MAX_KEPT) return 'recorded';
    // one more than the bound: this one is taken back (replicas adding at once each take back
    // their own, so the set never stays above the bound)
    await this.redis.zrem(this.key, member);
    return 'full';
  }

  /**
   * The settles due by `now`, at most `limit`, earliest first; a member this version cannot read
   * (a later version's, in a rolling upgrade or after one rolled back; or corrupt) is left to the
   * replicas that can, and put off ({@link putOff}). Throws when Redis fails.
   */
  async due(now: number, limit: number): Promise<RecordedSettle[]> {
    const reply = await this.redis.zrangebyscore(
      this.key,
      '-inf',
      now,
      'WITHSCORES',
      'LIMIT',
      0,
      limit,
    );
    const due: RecordedSettle[] = [];
    const unreadable: string[] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) {
      const member = reply[i] ?? '';
      const entry = parseMember(member, Number(reply[i + 1]));
      if (entry) due.push(entry);
      else unreadable.push(member);
    }
    if (unreadable.length > 0) await this.putOff(unreadable, now);
    return due;
  }

  /**
   * Makes `members` this version cannot read due {@link MAX_RETRY_MS} after `now`: left due, they
   * came first in every listing, and `limit` of them hid every readable one for good. Not removed:
   * this version cannot tell a corrupt member from one it is too old to read, which a later
   * version's replica still runs when it comes due again; a corrupt one comes back every 5 min,
   * taking a place in one listing. XX: one removed meanwhile (its run went through) stays removed;
   * GT: one put off further stays so. A failure leaves them due: put off at the next listing.
   */
  private async putOff(members: readonly string[], now: number): Promise<void> {
    const scored = members.flatMap((member) => [now + MAX_RETRY_MS, member]);
    await this.redis.zadd(this.key, 'XX', 'GT', ...scored).catch(() => undefined);
  }

  /**
   * `entry` went through: removed, unless a run that failed meanwhile (another replica's) made it
   * due later; that run is then made again, to no harm. Throws when Redis fails.
   */
  async done(entry: RecordedSettle): Promise<void> {
    await this.removeIfDue.run(this.redis, [this.key], [entry.member, entry.dueAt]);
  }

  /**
   * `entry` failed again at `now`: due as long after as it has been failing (at least 1 s, at
   * most 5 min). One a replica removed meanwhile (its run went through) stays removed. Throws when
   * Redis fails.
   */
  async failedAgain(entry: RecordedSettle, now: number): Promise<void> {
    const wait = Math.min(Math.max(now - entry.since, FIRST_RETRY_MS), MAX_RETRY_MS);
    await this.redis.zadd(this.key, 'XX', 'GT', now + wait, entry.member);
  }
}

/** The settle a member names, or undefined for one this version cannot read. */
function parseMember(member: string, dueAt: number): RecordedSettle | undefined {
  try {
    const [queue, taskId, idempotencyKey, since] = JSON.parse(member) as unknown[];
    if (typeof queue !== 'string' || typeof taskId !== 'string') return undefined;
    if (typeof idempotencyKey !== 'string' || typeof since !== 'number') return undefined;
    return { queue, taskId, idempotencyKey, since, dueAt, member };
  } catch {
    return undefined;
  }
}

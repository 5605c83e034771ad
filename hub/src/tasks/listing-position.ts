import type { Redis } from 'ioredis';
import { LuaScript } from '../redis/script-command';
import { scriptSource } from '../redis/scripts';

/**
 * Where a walk of one BullMQ list or sorted set of jobs stopped: after the job `last`. Not an
 * index, so it stays put while jobs come and go (`idsAfter.lua` says why). In a sorted set with
 * the score of `last`; in a list with the job that came after it, and the stay of each (which
 * tells a job that never left from one that left and came back).
 */
export type ListingPosition =
  { last: string; score: number } | { last: string; stay: string; next: string; nextStay: string };

/** BullMQ job types whose jobs are in a Redis list (the others are in sorted sets). */
export const LIST_TYPES: readonly string[] = ['wait', 'active'];

const IDS_AFTER = new LuaScript('idsAfter', scriptSource('idsAfter'));

/**
 * Up to `count` ids of the jobs of one type of a queue (`queuePrefix`: the prefix of its BullMQ
 * keys) after `after`, or from the oldest without it, oldest first. `end` is the position after
 * the last of them; none when no job follows them.
 */
export async function readIdsAfter(
  redis: Redis,
  queuePrefix: string,
  type: string,
  after: ListingPosition | undefined,
  count: number,
): Promise<{ ids: string[]; end?: ListingPosition }> {
  const args: (string | number)[] = [count, queuePrefix, after?.last ?? ''];
  if (after && 'score' in after) args.push(after.score);
  if (after && 'stay' in after) args.push(after.stay, after.next, after.nextStay);
  const [ids, more] = await IDS_AFTER.run<[string[], string[]]>(redis, [queuePrefix + type], args);
  const last = ids.at(-1);
  if (!last || more.length === 0) return { ids };
  const end: ListingPosition =
    more.length === 1
      ? { last, score: Number(more[0]) }
      : { last, stay: more[0]!, next: more[1]!, nextStay: more[2]! };
  return { ids, end };
}

import { createHash } from 'node:crypto';
import { MAX_TASK_ID_LENGTH } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import { luaScript } from '../redis/scripts';

/**
 * A job whose id is longer than a task id can be (an outside BullMQ producer's: BullMQ takes ids
 * of any length), named by a digest so that a cursor naming it stays bounded: the first
 * {@link DIGESTED_PREFIX_LENGTH} units of its id (a sorted set's order starts with them), the
 * SHA-1 of its id (UTF-8, as Redis holds it) and the id's length in bytes.
 */
export interface DigestedId {
  prefix: string;
  sha1: string;
  bytes: number;
}

/** A job a position names: by its id, or by {@link DigestedId} when the id is too long. */
export type JobName = string | DigestedId;

/** UTF-16 units of a long id a {@link DigestedId} keeps: enough to order most ids apart. */
export const DIGESTED_PREFIX_LENGTH = 32;

/**
 * Where a walk of one BullMQ list or sorted set of jobs stopped: after the job `last`. Not an
 * index, so it stays put while jobs come and go (`idsAfter.lua` says why). In a sorted set with
 * the score of `last`; in a list with the job that came after it, and the stay of each (which
 * tells a job that never left from one that left and came back).
 */
export type ListingPosition =
  | { last: JobName; score: number }
  | { last: JobName; stay: string; next: JobName; nextStay: string };

/** BullMQ job types whose jobs are in a Redis list (the others are in sorted sets). */
export const LIST_TYPES: readonly string[] = ['wait', 'active'];

const IDS_AFTER = luaScript('idsAfter');

/** How a position names the job `id`: by its id up to a task id's length, else by a digest. */
export function nameOf(id: string): JobName {
  if (id.length <= MAX_TASK_ID_LENGTH) return id;
  let prefix = id.slice(0, DIGESTED_PREFIX_LENGTH);
  // half a surrogate pair is not the start of the pair's UTF-8 bytes
  if (/[\ud800-\udbff]$/.test(prefix)) prefix = prefix.slice(0, -1);
  const sha1 = createHash('sha1').update(id, 'utf8').digest('hex');
  return { prefix, sha1, bytes: Buffer.byteLength(id) };
}

/** A named job as `idsAfter.lua` takes it: the id, "", ""; or the prefix, SHA-1 and length. */
const scriptArgs = (job: JobName): (string | number)[] =>
  typeof job === 'string' ? [job, '', ''] : [job.prefix, job.sha1, job.bytes];

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
  const args: (string | number)[] = [count, queuePrefix, ...scriptArgs(after?.last ?? '')];
  if (after && 'score' in after) args.push(after.score);
  if (after && 'stay' in after) args.push(after.stay, ...scriptArgs(after.next), after.nextStay);
  const [ids, more] = await IDS_AFTER.run<[string[], string[]]>(redis, [queuePrefix + type], args);
  const last = ids.at(-1);
  if (!last || more.length === 0) return { ids };
  const end: ListingPosition =
    more.length === 1
      ? { last: nameOf(last), score: Number(more[0]) }
      : { last: nameOf(last), stay: more[0]!, next: nameOf(more[1]!), nextStay: more[2]! };
  return { ids, end };
}

import { AppError, type ListTasksQuery, type TaskState, type TaskView } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { QueueRegistry } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';
import { LIST_TYPES, readIdsAfter, type JobName, type ListingPosition } from './listing-position';
import type { TaskService } from './task-service';

/** BullMQ job types that hold the tasks of each API state (active holds assigned and running). */
const TYPES_OF_STATE: Record<TaskState, string[]> = {
  waiting: ['wait', 'prioritized'],
  delayed: ['delayed'],
  assigned: ['active'],
  running: ['active'],
  completed: ['completed'],
  failed: ['failed'],
  cancelled: ['failed'],
};
const ALL_TYPES = ['active', 'wait', 'prioritized', 'delayed', 'failed', 'completed'];

/**
 * Most jobs one page reads, whatever it keeps: a state filter may drop most of what it reads
 * (`cancelled` among failed tasks, `running` among active ones), and each read task costs a few
 * Redis round trips. A page that reaches it ends early, with a cursor to go on from.
 */
export const MAX_SCANNED_PER_PAGE = 500;

/**
 * Most reads one page makes (each a round trip or two, whether it finds jobs or not): a walk over
 * many queues, most of whose job types are empty, or a small `limit` with a state filter that
 * drops what it reads, ends a page early too.
 */
export const MAX_READS_PER_PAGE = 100;

/** Where a walk stopped: a queue and a job type by name (not by index: queues are added). */
interface Cursor {
  q: string;
  t: string;
  /** where in that (queue, type); none: at its start */
  at?: ListingPosition;
}

/** An encoded cursor's fields at the start of a type: the queue and the type. */
const START_FIELDS = ['q', 't'];
/**
 * In a sorted set: also the last job read (`a`) and its score (`s`). A job is named by its id, or
 * by `[prefix, SHA-1, bytes]` when its id is too long to carry (`DigestedId`).
 */
const SORTED_SET_FIELDS = [...START_FIELDS, 'a', 's'];
/** In a list: also the last job read (`a`), its stay (`as`), the job after it (`n`), its stay. */
const LIST_FIELDS = [...START_FIELDS, 'a', 'as', 'n', 'ns'];

const notACursor = () => new AppError('E_VALIDATION', 'cursor: not a cursor this API returned');
const hasExactly = (names: string[], expected: string[]) =>
  names.length === expected.length && expected.every((name) => names.includes(name));
const isId = (value: unknown): value is string => typeof value === 'string' && value !== '';
/** A job as a cursor names it: its id, or `[prefix, SHA-1, bytes]` (`DigestedId`); else none. */
function decodeJobName(value: unknown): JobName | undefined {
  if (isId(value)) return value;
  if (!Array.isArray(value) || value.length !== 3) return undefined;
  const [prefix, sha1, bytes] = value as unknown[];
  if (typeof prefix !== 'string' || typeof sha1 !== 'string' || !/^[0-9a-f]{40}$/.test(sha1))
    return undefined;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) return undefined;
  return { prefix, sha1, bytes };
}
const encodeJobName = (job: JobName) =>
  typeof job === 'string' ? job : [job.prefix, job.sha1, job.bytes];
/** A job's stay as `idsAfter.lua` writes it: runs started, length of its stack traces. */
const isStay = (value: unknown): value is string =>
  typeof value === 'string' && /^\d{1,15}:\d{1,15}$/.test(value);

/** The cursor a page answered, or E_VALIDATION. */
export function decodeCursor(raw: string): Cursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw notACursor();
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw notACursor();
  const fields = parsed as Record<string, unknown>;
  const names = Object.keys(fields);
  const { q, t, a, s, as, n, ns } = fields;
  if (typeof q !== 'string' || typeof t !== 'string' || !ALL_TYPES.includes(t)) throw notACursor();
  if (hasExactly(names, START_FIELDS)) return { q, t };
  const list = LIST_TYPES.includes(t);
  const [last, next] = [decodeJobName(a), decodeJobName(n)];
  if (list && hasExactly(names, LIST_FIELDS) && last && isStay(as) && next && isStay(ns))
    return { q, t, at: { last, stay: as, next, nextStay: ns } };
  if (!list && hasExactly(names, SORTED_SET_FIELDS) && last && Number.isFinite(s))
    return { q, t, at: { last, score: s as number } };
  throw notACursor();
}

/**
 * The cursor of a walk stopped in `pair` at `at`: never longer than shared's `MAX_CURSOR_LENGTH`
 * (a job id longer than a task id can be is named by a digest, shorter than such an id).
 */
export function encodeCursor(pair: { queue: string; type: string }, at?: ListingPosition): string {
  const where = !at
    ? {}
    : 'score' in at
      ? { a: encodeJobName(at.last), s: at.score }
      : { a: encodeJobName(at.last), as: at.stay, n: encodeJobName(at.next), ns: at.nextStay };
  return Buffer.from(JSON.stringify({ q: pair.queue, t: pair.type, ...where })).toString(
    'base64url',
  );
}

/**
 * `GET /v1/tasks`: walks (queue, BullMQ type) pairs in a fixed order (queues by name), each type
 * oldest first; the cursor names the pair it stopped in, and where in it, so a queue created
 * between pages changes nothing already walked. A page holds at most `limit` tasks and reads at
 * most {@link MAX_SCANNED_PER_PAGE} jobs in at most {@link MAX_READS_PER_PAGE} reads: it may hold
 * fewer, even none, and still have a `nextCursor`; the walk ends when there is none.
 *
 * Where in a type is not an offset (a task leaving or entering the type would move it, and the
 * next page would miss or repeat one) but the last job read: in a sorted set with its score, in a
 * list with the job after it (`idsAfter.lua`). So a walk lists once every task that stays in the
 * listed state all along; a task that enters or leaves it meanwhile may or may not be listed. One
 * exception, in a list (waiting, assigned, running): when both jobs the cursor names were removed
 * from its middle (cancelled, or finished while older ones ran on), the walk starts that list
 * over, and may list again tasks it listed (it still misses none): a cursor of bounded size cannot
 * tell the tasks read from the others once both are gone (`idsAfter.lua`). A job whose id is
 * longer than a task id can be (an outside producer's) is named by a digest (`DigestedId`), so
 * the cursor stays bounded and the walk goes on past it; when such a job, the last one read,
 * leaves a sorted set, the walk goes on from the first job of its score and prefix, and may list
 * again some of those (it misses none).
 *
 * Tasks cancelled while waiting (their job removed) are not listed; `GET /v1/tasks/:id` still
 * shows them.
 */
export async function listTasks(
  deps: { redis: Redis; keys: RedisKeys; queues: QueueRegistry; tasks: TaskService },
  query: ListTasksQuery,
): Promise<{ tasks: TaskView[]; nextCursor?: string }> {
  const names = query.queue ? [query.queue] : (await deps.redis.smembers(deps.keys.queues)).sort();
  const types = query.state ? TYPES_OF_STATE[query.state] : ALL_TYPES;
  const pairs = names.flatMap((queue) => types.map((type) => ({ queue, type })));
  const cursor = query.cursor ? decodeCursor(query.cursor) : undefined;
  let p = cursor ? pairs.findIndex((pair) => notBefore(pair, cursor)) : 0;
  if (p < 0) return { tasks: [] };
  const resumed = cursor && pairs[p]!.queue === cursor.q && pairs[p]!.type === cursor.t;
  let at = resumed ? cursor.at : undefined;
  const tasks: TaskView[] = [];
  let scanned = 0;
  let reads = 0;
  while (
    p < pairs.length &&
    tasks.length < query.limit &&
    scanned < MAX_SCANNED_PER_PAGE &&
    reads < MAX_READS_PER_PAGE
  ) {
    const pair = pairs[p]!;
    const known = await deps.redis.sismember(deps.keys.queues, pair.queue);
    if (!known) return { tasks };
    const { queue } = await deps.queues.get(pair.queue);
    const need = Math.min(query.limit - tasks.length, MAX_SCANNED_PER_PAGE - scanned);
    const prefix = deps.keys.bullQueuePrefix(pair.queue);
    const read = await readIdsAfter(deps.redis, prefix, pair.type, at, need);
    reads++;
    // the jobs read: an empty type costs a read (MAX_READS_PER_PAGE), not a page's worth of jobs
    scanned += read.ids.length;
    const jobs = await Promise.all(read.ids.map((id) => queue.getJob(id)));
    // all at once: one after another, each task cost its own round trips (500 tasks, 500+)
    const views = await Promise.all(jobs.map(async (job) => job && deps.tasks.view(job)));
    for (const view of views) {
      if (view && (!query.state || view.state === query.state)) tasks.push(view);
    }
    at = read.end;
    if (!at) p++;
  }
  if (p >= pairs.length) return { tasks };
  return { tasks, nextCursor: encodeCursor(pairs[p]!, at) };
}

/** Whether `pair` is at or after the cursor's pair in the walk's order. */
function notBefore(pair: { queue: string; type: string }, cursor: Cursor): boolean {
  if (pair.queue !== cursor.q) return pair.queue > cursor.q;
  return ALL_TYPES.indexOf(pair.type) >= ALL_TYPES.indexOf(cursor.t);
}

import { AppError, type ListTasksQuery, type TaskState, type TaskView } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { QueueRegistry } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';
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

/** Where a walk stopped: a queue and a job type by name (not by index: queues are added). */
interface Cursor {
  q: string;
  t: string;
  /** offset within that (queue, type) */
  o: number;
}

/** The cursor a page answered, or E_VALIDATION. */
export function decodeCursor(raw: string): Cursor {
  try {
    const parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Partial<Cursor>;
    if (
      typeof parsed === 'object' &&
      parsed !== null &&
      typeof parsed.q === 'string' &&
      typeof parsed.t === 'string' &&
      ALL_TYPES.includes(parsed.t) &&
      Number.isSafeInteger(parsed.o) &&
      parsed.o! >= 0
    ) {
      return { q: parsed.q, t: parsed.t, o: parsed.o! };
    }
  } catch {
    // fall through
  }
  throw new AppError('E_VALIDATION', 'cursor: not a cursor this API returned');
}

const encodeCursor = (cursor: Cursor): string =>
  Buffer.from(JSON.stringify(cursor)).toString('base64url');

/**
 * `GET /v1/tasks`: walks (queue, BullMQ type) pairs in a fixed order (queues by name); the cursor
 * names the pair it stopped in, and an offset in it, so a queue created between pages changes
 * nothing already walked. A page holds at most `limit` tasks and reads at most
 * {@link MAX_SCANNED_PER_PAGE} jobs: it may hold fewer, even none, and still have a
 * `nextCursor`; the walk ends when there is none. Offsets count from each type's oldest job, so a
 * task that leaves the type between pages (dispatched, trimmed) moves the rest by one: a page may
 * then miss one task. Tasks cancelled while waiting (their job removed) are not listed;
 * `GET /v1/tasks/:id` still shows them.
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
  let o = resumed ? cursor.o : 0;
  const tasks: TaskView[] = [];
  let scanned = 0;
  while (p < pairs.length && tasks.length < query.limit && scanned < MAX_SCANNED_PER_PAGE) {
    const pair = pairs[p]!;
    const known = await deps.redis.sismember(deps.keys.queues, pair.queue);
    if (!known) return { tasks };
    const handle = await deps.queues.get(pair.queue);
    const need = Math.min(query.limit - tasks.length, MAX_SCANNED_PER_PAGE - scanned);
    const jobs = await handle.queue.getJobs([pair.type as 'wait'], o, o + need - 1, true);
    scanned += need;
    for (const job of jobs) {
      if (!job) continue;
      const view = await deps.tasks.view(job);
      if (view && (!query.state || view.state === query.state)) tasks.push(view);
    }
    if (jobs.length < need) {
      p++;
      o = 0;
    } else {
      o += jobs.length;
    }
  }
  if (p >= pairs.length) return { tasks };
  return { tasks, nextCursor: encodeCursor({ q: pairs[p]!.queue, t: pairs[p]!.type, o }) };
}

/** Whether `pair` is at or after the cursor's pair in the walk's order. */
function notBefore(pair: { queue: string; type: string }, cursor: Cursor): boolean {
  if (pair.queue !== cursor.q) return pair.queue > cursor.q;
  return ALL_TYPES.indexOf(pair.type) >= ALL_TYPES.indexOf(cursor.t);
}

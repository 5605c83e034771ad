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

interface Cursor {
  /** index into the (queue, type) pairs */
  p: number;
  /** offset within that pair */
  o: number;
}

function decodeCursor(raw: string | undefined): Cursor {
  if (!raw) return { p: 0, o: 0 };
  try {
    const parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Partial<Cursor>;
    if (
      Number.isInteger(parsed.p) &&
      Number.isInteger(parsed.o) &&
      parsed.p! >= 0 &&
      parsed.o! >= 0
    ) {
      return { p: parsed.p!, o: parsed.o! };
    }
  } catch {
    // fall through
  }
  throw new AppError('E_VALIDATION', 'cursor: not a cursor this API returned');
}

const encodeCursor = (cursor: Cursor): string =>
  Buffer.from(JSON.stringify(cursor)).toString('base64url');

/**
 * `GET /v1/tasks`: walks (queue, BullMQ type) pairs in a fixed order; the cursor is the position
 * in that walk, so pages stay consistent however many tasks a state filter drops. Tasks cancelled
 * while waiting (their job removed) are not listed; `GET /v1/tasks/:id` still shows them.
 */
export async function listTasks(
  deps: { redis: Redis; keys: RedisKeys; queues: QueueRegistry; tasks: TaskService },
  query: ListTasksQuery,
): Promise<{ tasks: TaskView[]; nextCursor?: string }> {
  const names = query.queue ? [query.queue] : (await deps.redis.smembers(deps.keys.queues)).sort();
  const types = query.state ? TYPES_OF_STATE[query.state] : ALL_TYPES;
  const pairs = names.flatMap((queue) => types.map((type) => ({ queue, type })));
  let { p, o } = decodeCursor(query.cursor);
  const tasks: TaskView[] = [];
  while (p < pairs.length && tasks.length < query.limit) {
    const pair = pairs[p]!;
    const known = await deps.redis.sismember(deps.keys.queues, pair.queue);
    if (!known) return { tasks };
    const handle = await deps.queues.get(pair.queue);
    const need = query.limit - tasks.length;
    const jobs = await handle.queue.getJobs([pair.type as 'wait'], o, o + need - 1, true);
    for (const job of jobs) {
      if (!job) continue;
      const view = await deps.tasks.view(job);
      if (!query.state || view.state === query.state) tasks.push(view);
    }
    if (jobs.length < need) {
      p++;
      o = 0;
    } else {
      o += jobs.length;
    }
  }
  return p < pairs.length ? { tasks, nextCursor: encodeCursor({ p, o }) } : { tasks };
}

import type { TaskAssign } from '@agentcom/shared';
import type { FetchedJob } from '../fsm/agent-store';
import type { TaskData, TaskJob } from '../queues/queue-registry';
import { readTaskData } from '../queues/task-data';

/** What `task:assign` and the dispatch metrics need of a job. */
export interface AssignedTask {
  id: string;
  data: TaskData;
  timestamp: number;
  attemptsMade: number;
  attemptsStarted: number;
  attempts: number;
  delay: number;
  /** The task failed before (an operator retried it): its next push is not its first. */
  failedBefore: boolean;
}

/** A job whose data is no task's (see `readTaskData`): it is failed, never pushed. */
export interface NotATask {
  id: string;
  problem: string;
}

/** A job hash as `claimAndFetch` returns it (BullMQ's field names), read like BullMQ's Job. */
export function taskFromFields(job: FetchedJob): AssignedTask | NotATask {
  const { fields } = job;
  const read = readTaskData(parsedData(fields.data));
  if ('problem' in read) return { id: job.id, problem: read.problem };
  const opts = JSON.parse(fields.opts ?? '{}') as { attempts?: number; delay?: number };
  return {
    id: job.id,
    data: read.data,
    timestamp: Number(fields.timestamp ?? 0),
    attemptsMade: Number(fields.atm ?? fields.attemptsMade ?? 0),
    attemptsStarted: Number(fields.ats ?? 0),
    attempts: opts.attempts ?? 1,
    delay: opts.delay ?? 0,
    failedBefore: hasTraces(fields.stacktrace),
  };
}

/** A job BullMQ read. */
export function taskFromJob(job: TaskJob): AssignedTask | NotATask {
  const read = readTaskData(job.data);
  if ('problem' in read) return { id: job.id ?? '', problem: read.problem };
  return {
    id: job.id ?? '',
    data: read.data,
    timestamp: job.timestamp,
    attemptsMade: job.attemptsMade,
    attemptsStarted: job.attemptsStarted,
    attempts: job.opts.attempts ?? 1,
    delay: job.opts.delay ?? 0,
    failedBefore: (job.stacktrace ?? []).length > 0,
  };
}

/** The `task:assign` of a task recorded on an agent under `token`. */
export function assignMessage(queue: string, token: string, task: AssignedTask): TaskAssign {
  const { data, attempts } = task;
  return {
    task: {
      id: task.id,
      queue,
      payload: data.payload,
      ...(data.labels ? { labels: data.labels } : {}),
      createdAt: task.timestamp,
    },
    token,
    attempt: Math.min(task.attemptsMade + 1, attempts),
    attempts,
    ...(data.timeoutMs !== undefined ? { timeoutMs: data.timeoutMs } : {}),
  };
}

/**
 * True when a job's `stacktrace` field lists a failure: every `moveToFailed` appends one (no task
 * sets `stackTraceLimit`), and an operator's retry (`reprocessJob`) keeps them.
 */
function hasTraces(stacktrace: string | undefined): boolean {
  if (!stacktrace) return false;
  try {
    const traces: unknown = JSON.parse(stacktrace);
    return Array.isArray(traces) && traces.length > 0;
  } catch {
    return false;
  }
}

/** A job's `data` field as JSON (BullMQ writes it so); text that is none is no task's either. */
function parsedData(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

import { labelsSchema, taskTimeoutMsSchema } from '@agentcom/shared';
import type { TaskData } from './queue-registry';

/**
 * A job's data read as a task's (`{payload, labels?, timeoutMs?}`), or why it is none. The API
 * only writes task-shaped data, but anything else that writes to a task queue does not have to:
 * a BullMQ producer adding jobs straight to the queue, Bull Board's "add job" or "edit data"
 * (`null` is a click away). Such a job stopped its queue: each dispatch step that fetched it threw
 * (`dispatch failed`), the task went back after the ack timeout and was fetched again, first in
 * line, and `GET /v1/tasks?queue=` answered 500 for the whole queue.
 */
export function readTaskData(raw: unknown): { data: TaskData } | { problem: string } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    const what = raw === null ? 'null' : Array.isArray(raw) ? 'an array' : typeof raw;
    return { problem: `its data is ${what}, not an object` };
  }
  const { payload, labels, timeoutMs } = raw as Record<string, unknown>;
  const data: TaskData = { payload: payload ?? null };
  if (labels !== undefined) {
    const parsed = labelsSchema.safeParse(labels);
    if (!parsed.success) return { problem: 'its labels are not a task’s (string to string)' };
    data.labels = parsed.data;
  }
  if (timeoutMs !== undefined) {
    const parsed = taskTimeoutMsSchema.safeParse(timeoutMs);
    if (!parsed.success)
      return { problem: 'its timeoutMs is not whole milliseconds from 100 to 7 days' };
    data.timeoutMs = parsed.data;
  }
  return { data };
}

/** What the API shows of a job's data: a task's, or, for data that is none, all of it as payload. */
export function shownTaskData(raw: unknown): TaskData {
  const read = readTaskData(raw);
  return 'data' in read ? read.data : { payload: raw ?? null };
}

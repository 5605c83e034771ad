import { z } from 'zod';
import {
  DEFAULT_QUEUE,
  MAX_QUEUE_NAME_LENGTH,
  MAX_TASK_ID_LENGTH,
  agentIdSchema,
  queueNameSchema,
  taskIdSchema,
} from '../domain/ids';
import { boundedJsonSchema, labelsSchema } from '../domain/json';
import { TASK_STATES } from '../domain/task-state';
import { queryInteger } from './query-integer';

/**
 * BullMQ's highest priority value (2^21 - 1, its `PRIORITY_LIMIT`: one more was accepted here and
 * refused by BullMQ, a 500). Lower numbers run first among prioritized tasks; 0 means none, and a
 * task without a priority runs before every prioritized one (BullMQ's order).
 */
export const MAX_PRIORITY = 2_097_151;
const DAY_MS = 24 * 60 * 60 * 1000;

export const backoffSchema = z
  .object({
    type: z.enum(['fixed', 'exponential']),
    delayMs: z.number().int().min(0).max(DAY_MS),
  })
  .strict();
export type Backoff = z.infer<typeof backoffSchema>;

/**
 * The longest wait before a retry: BullMQ's exponential backoff waits 2^(n−1) × `delayMs` before
 * retry n, with no ceiling of its own (`attempts` 100 at 1 s would wait about 10^22 years before the
 * last one). A body whose last retry would wait longer is refused rather than capped, so a task
 * never waits other than as its options say. 7 days, as a run's `timeoutMs`.
 */
export const MAX_RETRY_DELAY_MS = 7 * DAY_MS;

/** How long a task with these options waits before its last retry (0 without retries). */
export function longestRetryDelayMs(attempts: number, backoff: Backoff | undefined): number {
  if (!backoff || attempts < 2) return 0;
  return backoff.type === 'fixed' ? backoff.delayMs : 2 ** (attempts - 2) * backoff.delayMs;
}

/** A task's run timeout (`timeoutMs`): at least 100 ms, at most 7 days. */
export const taskTimeoutMsSchema = z
  .number()
  .int()
  .min(100)
  .max(7 * DAY_MS);

/** `POST /v1/tasks` body. */
export const createTaskBodySchema = z
  .object({
    queue: queueNameSchema.default(DEFAULT_QUEUE),
    payload: boundedJsonSchema,
    priority: z.number().int().min(0).max(MAX_PRIORITY).optional(),
    delayMs: z
      .number()
      .int()
      .min(0)
      .max(365 * DAY_MS)
      .optional(),
    attempts: z.number().int().min(1).max(100).default(3),
    backoff: backoffSchema.optional(),
    timeoutMs: taskTimeoutMsSchema.optional(),
    idempotencyKey: z.string().min(1).max(256).optional(),
    labels: labelsSchema.optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    const longest = longestRetryDelayMs(body.attempts, body.backoff);
    if (longest > MAX_RETRY_DELAY_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['backoff'],
        message: `exponential backoff would wait ${longest} ms before the last of ${body.attempts} attempts; at most ${MAX_RETRY_DELAY_MS} ms (7 days): lower attempts or backoff.delayMs, or use fixed`,
      });
    }
  });
export type CreateTaskBody = z.input<typeof createTaskBodySchema>;
export type CreateTaskInput = z.output<typeof createTaskBodySchema>;

/**
 * What `POST /v1/tasks` (and each entry of a batch) answers. A duplicate (an idempotency key that
 * names an earlier task) shows that task's state; `removed` when it is no longer kept (trimmed by
 * retention or removed by an operator) and no outcome of it is recorded either.
 */
export const createTaskResponseSchema = z.object({
  id: taskIdSchema,
  state: z.enum([...TASK_STATES, 'removed']),
  duplicate: z.boolean().optional(),
});
export type CreateTaskResponse = z.infer<typeof createTaskResponseSchema>;

/** Most tasks one `POST /v1/tasks/batch` creates. */
export const MAX_BATCH_TASKS = 500;

/**
 * `POST /v1/tasks/batch` body: tasks as `POST /v1/tasks` takes them. Every one is validated
 * before any is created; the whole body is bounded like any request (2 MiB).
 */
export const createTaskBatchBodySchema = z
  .object({ tasks: z.array(createTaskBodySchema).min(1).max(MAX_BATCH_TASKS) })
  .strict();
export type CreateTaskBatchBody = z.input<typeof createTaskBatchBodySchema>;

/** `POST /v1/tasks/batch` response: one entry per task, in the order of the request. */
export const createTaskBatchResponseSchema = z.object({ tasks: z.array(createTaskResponseSchema) });
export type CreateTaskBatchResponse = z.infer<typeof createTaskBatchResponseSchema>;

/** Most bytes of a JSON string of `units` UTF-16 units of any kind (`\u001f`: 6 for 1). */
const anyJsonStringBytes = (units: number): number => 6 * units + 2;
/** Bytes of a JSON string of `length` ASCII letters, digits and punctuation that need no escape. */
const plainJsonStringBytes = (length: number): number => length + 2;

/**
 * Longest `cursor` of `GET /v1/tasks`: the widest the hub can answer (hub/src/tasks/task-listing.ts),
 * so that every cursor it answered is taken back, and no longer, so a made-up one stays bounded.
 * The widest is a list's: base64url of `{"q","t","a","as","n","ns"}`, a queue name, a BullMQ type,
 * two job ids of up to {@link MAX_TASK_ID_LENGTH} units, whatever characters an outside BullMQ
 * producer gave them, and their stays (`\d{1,15}:\d{1,15}`). BullMQ takes ids of any length: a
 * longer one is named by a digest instead (a prefix of 32 units, a SHA-1, a length), narrower, so
 * that the walk goes on past it. Derived, not written out: a longer task id or queue name
 * lengthens it.
 */
export const MAX_CURSOR_LENGTH = Math.ceil(
  (4 / 3) *
    // braces, commas and the keys with their colons, then the values
    (2 +
      5 +
      26 +
      plainJsonStringBytes(MAX_QUEUE_NAME_LENGTH) +
      plainJsonStringBytes('prioritized'.length) +
      2 * anyJsonStringBytes(MAX_TASK_ID_LENGTH) +
      2 * plainJsonStringBytes('999999999999999:999999999999999'.length)),
);

/** `GET /v1/tasks` query. `cursor` is opaque: pass back the `nextCursor` of the previous page. */
export const listTasksQuerySchema = z
  .object({
    queue: queueNameSchema.optional(),
    state: z.enum(TASK_STATES).optional(),
    limit: queryInteger({ min: 1, max: 500 }).default(50),
    cursor: z.string().max(MAX_CURSOR_LENGTH).optional(),
  })
  .strict();
export type ListTasksQuery = z.output<typeof listTasksQuerySchema>;

/**
 * The query of the routes of one task (`GET /v1/tasks/:id`, `POST /v1/tasks/:id/cancel` and
 * `/retry`): `queue`, the task's queue. A task id is unique in its queue only: the API's own are
 * UUIDs, but the ids a BullMQ producer (or Bull Board's "add job") leaves to BullMQ count 1, 2, ...
 * in each queue. Without `queue`, the id names the task of the first known queue that holds it.
 */
export const taskQuerySchema = z.object({ queue: queueNameSchema.optional() }).strict();

/** `GET /v1/tasks/:id/logs` query (`queue` as in {@link taskQuerySchema}). */
export const taskLogsQuerySchema = z
  .object({
    queue: queueNameSchema.optional(),
    start: queryInteger({ min: 0 }).default(0),
    limit: queryInteger({ min: 1, max: 1000 }).default(100),
  })
  .strict();

/** `POST /v1/tasks/:id/cancel` body (optional). */
export const cancelTaskBodySchema = z
  .object({ reason: z.string().min(1).max(1024).optional() })
  .strict();

export const taskParamsSchema = z.object({ id: taskIdSchema }).strict();

/**
 * `details` of `GET /v1/tasks/:id`'s 410 `E_TASK_TRIMMED`: a task that finished and that
 * retention (`RETENTION_*`) no longer keeps, whose outcome is still recorded (24 h after its end):
 * all that is known of it. An error rather than a {@link TaskView} without its payload, queue
 * and times: a client reading a view would take the missing fields for a bug.
 */
export const trimmedTaskSchema = z.object({
  id: taskIdSchema,
  state: z.enum(['completed', 'failed', 'cancelled']),
});
export type TrimmedTask = z.infer<typeof trimmedTaskSchema>;

/** A task as `GET /v1/tasks/:id` shows it. */
export interface TaskView {
  id: string;
  queue: string;
  state: (typeof TASK_STATES)[number];
  payload: unknown;
  priority: number;
  attempts: number;
  /** Attempts started so far (1 while the first one runs). */
  attempt: number;
  attemptsMade: number;
  timeoutMs?: number;
  labels?: Record<string, string>;
  agentId?: string;
  progress?: unknown;
  result?: unknown;
  error?: string;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
}

export const taskViewAgentSchema = agentIdSchema;

import { z } from 'zod';
import { boundedJsonSchema, taskIdSchema } from '@agentcom/shared';

/**
 * The local IPC between the running sidecar and its local commands (`status`, `done`, `fail`):
 * a unix socket, `<state-dir>/sidecar.sock` (owner-only), carrying newline-delimited JSON. The
 * client sends one request line and reads one response line. Both sides are this package, but
 * the daemon still validates every request: any process of the same user may write to it.
 */

/** Longest request line the daemon reads (a result is at most 1 MiB of JSON). */
export const MAX_IPC_LINE_BYTES = 4 * 1024 * 1024;

/** Longest `--retry-after`: one week. */
export const MAX_RETRY_AFTER_SECONDS = 7 * 24 * 3600;

/** A wake run's id (`run` in `current.json`, `AGENTCOM_RUN_ID`): 16 hex digits. */
export const runIdSchema = z.string().regex(/^[0-9a-f]{16}$/, 'must be a run id (16 hex digits)');

export const statusRequestSchema = z.object({ type: z.literal('status') }).strict();

export const doneRequestSchema = z
  .object({
    type: z.literal('done'),
    /** Only end this task: refused if another one is in hand. */
    taskId: taskIdSchema.optional(),
    /** Only end this run (`run` of `current.json`): refused for another attempt of the task. */
    run: runIdSchema.optional(),
    /** The task's result; absent means `null`. */
    result: boundedJsonSchema.optional(),
  })
  .strict();

export const failRequestSchema = z
  .object({
    type: z.literal('fail'),
    taskId: taskIdSchema.optional(),
    run: runIdSchema.optional(),
    reason: z
      .string()
      .min(1)
      .max(64 * 1024),
    retryable: z.boolean(),
    /** Rate limited: the hub cools the agent down this long and requeues the task without using an attempt. */
    retryAfterSeconds: z.number().positive().max(MAX_RETRY_AFTER_SECONDS).optional(),
  })
  .strict();

export const ipcRequestSchema = z.discriminatedUnion('type', [
  statusRequestSchema,
  doneRequestSchema,
  failRequestSchema,
]);
export type IpcRequest = z.infer<typeof ipcRequestSchema>;

/** What `status` reports. Unknown values are `null`, so the shape is always the same. */
export const sidecarStatusSchema = z.object({
  agentId: z.string(),
  mode: z.enum(['exec', 'wake']),
  /** `connecting`: not connected yet since the start; `disconnected`: lost, reconnecting. */
  connection: z.enum(['connected', 'connecting', 'disconnected']),
  /** Seconds since the connection state last changed. */
  connectionAgeSec: z.number(),
  /** The hub URL in use (connected, or being tried). */
  hubUrl: z.string(),
  /** The hub replica's id, when the hub tells it. */
  hubReplica: z.string().nullable(),
  /** The agent's state in the hub, from the last heartbeat ack. */
  agentState: z.string().nullable(),
  /** Seconds since that heartbeat ack. */
  agentStateAgeSec: z.number().nullable(),
  task: z.object({ id: z.string(), attempt: z.number(), ageSec: z.number() }).strict().nullable(),
  /** Reports waiting for the hub's ack. */
  outbox: z.number(),
  draining: z.boolean(),
  pid: z.number(),
  uptimeSec: z.number(),
  version: z.string(),
  stateDir: z.string(),
});
export type SidecarStatus = z.infer<typeof sidecarStatusSchema>;

export const IPC_ERROR_CODES = [
  /** The request is malformed (bad JSON, an unacceptable result): exit 2. */
  'E_BAD_REQUEST',
  /** `done` / `fail` with no task in hand: exit 1. */
  'E_NO_TASK',
  /** `done` / `fail --task X` while another task is in hand: exit 1. */
  'E_OTHER_TASK',
  /** `done` / `fail` of a sidecar in exec mode: exit 1. */
  'E_NOT_WAKE_MODE',
  /** The sidecar failed to answer (a bug; logged there): exit 1. */
  'E_INTERNAL',
] as const;
export type IpcErrorCode = (typeof IPC_ERROR_CODES)[number];

export const ipcResponseSchema = z.union([
  z.object({ ok: z.literal(true), status: sidecarStatusSchema }).strict(),
  z.object({ ok: z.literal(true), taskId: z.string() }).strict(),
  z.object({ ok: z.literal(false), code: z.enum(IPC_ERROR_CODES), message: z.string() }).strict(),
]);
export type IpcResponse = z.infer<typeof ipcResponseSchema>;

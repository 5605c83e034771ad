import { z } from 'zod';
import { agentIdSchema, assignmentTokenSchema, queueNameSchema, taskIdSchema } from '../domain/ids';
import { boundedJsonSchema, labelsSchema } from '../domain/json';

/**
 * Zod schemas of every Socket.IO payload. Objects are `.strict()`: an unknown field is an error,
 * not something silently dropped. Identity never comes from these payloads: the hub takes it from
 * the authenticated socket.
 */

/** What the sidecar believes it holds when it (re)connects. */
export const currentAssignmentSchema = z
  .object({
    taskId: taskIdSchema,
    token: assignmentTokenSchema,
    state: z.enum(['assigned', 'working', 'finished']),
  })
  .strict();
export type CurrentAssignment = z.infer<typeof currentAssignmentSchema>;

/** Socket.IO handshake `auth` of a sidecar. */
export const handshakeAuthSchema = z
  .object({
    agentId: agentIdSchema,
    token: z.string().min(1).max(512),
    protocol: z.number().int().min(0).max(1_000_000),
    queues: z.array(queueNameSchema).min(1).max(32),
    labels: labelsSchema.optional(),
    sidecarVersion: z.string().min(1).max(64),
    current: currentAssignmentSchema.optional(),
  })
  .strict();
export type HandshakeAuth = z.infer<typeof handshakeAuthSchema>;

/** The task as the sidecar receives it. `payload` is data, never a command to run. */
export const assignedTaskSchema = z
  .object({
    id: taskIdSchema,
    queue: queueNameSchema,
    payload: z.unknown(),
    labels: labelsSchema.optional(),
    createdAt: z.number(),
  })
  .strict();
export type AssignedTask = z.infer<typeof assignedTaskSchema>;

// hub → sidecar

export const taskAssignSchema = z
  .object({
    task: assignedTaskSchema,
    token: assignmentTokenSchema,
    attempt: z.number().int().min(1),
    attempts: z.number().int().min(1),
    timeoutMs: z.number().int().positive().optional(),
  })
  .strict();
export type TaskAssign = z.infer<typeof taskAssignSchema>;

export const CANCEL_REASONS = ['cancelled', 'timeout', 'lease_lost', 'superseded'] as const;
/**
 * `token`: the assignment the cancel stops (a run timeout, a lost lease, a superseded
 * assignment); the sidecar ignores it when it holds another assignment of the task (a retry
 * pushed to it meanwhile). Without one (an operator's cancel) it stops whichever assignment of
 * the task the sidecar holds.
 */
export const taskCancelSchema = z
  .object({
    taskId: taskIdSchema,
    reason: z.enum(CANCEL_REASONS),
    token: assignmentTokenSchema.optional(),
  })
  .strict();
export type TaskCancel = z.infer<typeof taskCancelSchema>;

export const hubDrainingSchema = z.object({}).strict();
export type HubDraining = z.infer<typeof hubDrainingSchema>;

export const hubErrorSchema = z.object({ code: z.string(), message: z.string() }).strict();
export type HubError = z.infer<typeof hubErrorSchema>;

// sidecar → hub

const assignmentRef = { taskId: taskIdSchema, token: assignmentTokenSchema };

export const taskAcceptSchema = z.object(assignmentRef).strict();
export type TaskAccept = z.infer<typeof taskAcceptSchema>;

export const taskProgressSchema = z
  .object({
    ...assignmentRef,
    progress: z.number().min(0).max(100),
    message: z.string().max(1024).optional(),
  })
  .strict();
export type TaskProgress = z.infer<typeof taskProgressSchema>;

export const MAX_LOG_LINES = 100;
export const MAX_LOG_LINE_BYTES = 8 * 1024;
/** Log lines the hub keeps per task: each line over it drops the oldest (as BullMQ's `keepLogs`). */
export const MAX_TASK_LOG_LINES = 10_000;
export const taskLogSchema = z
  .object({
    ...assignmentRef,
    lines: z.array(z.string().max(MAX_LOG_LINE_BYTES)).min(1).max(MAX_LOG_LINES),
  })
  .strict();
export type TaskLog = z.infer<typeof taskLogSchema>;

export const taskCompleteSchema = z
  .object({ ...assignmentRef, result: boundedJsonSchema.optional() })
  .strict();
export type TaskComplete = z.infer<typeof taskCompleteSchema>;

/** Why an attempt failed, as the sidecar saw it. `cancelled` never retries. */
export const FAIL_KINDS = ['error', 'timeout', 'cancelled'] as const;
export type FailKind = (typeof FAIL_KINDS)[number];

export const taskFailSchema = z
  .object({
    ...assignmentRef,
    error: z
      .string()
      .min(1)
      .max(64 * 1024),
    retryable: z.boolean(),
    kind: z.enum(FAIL_KINDS).optional(),
    /**
     * A rate limit: the agent is limited for this long from now (ms; 0: no longer) and goes to
     * `cooldown`, the task back to wait without using an attempt. A duration, not a time: the
     * agent's machine clock need not agree with the hub's. Wins over `rateLimitedUntil`.
     */
    retryAfterMs: z.number().int().nonnegative().optional(),
    /**
     * A rate limit as an epoch-ms time on the agent's own clock (what sidecars before
     * `retryAfterMs` send): rested until then by the hub's clock, off by the two clocks' skew.
     */
    rateLimitedUntil: z.number().int().positive().optional(),
  })
  .strict();
export type TaskFail = z.infer<typeof taskFailSchema>;

export const agentHeartbeatSchema = z
  .object({ taskId: taskIdSchema.optional(), token: assignmentTokenSchema.optional() })
  .strict();
export type AgentHeartbeat = z.infer<typeof agentHeartbeatSchema>;

export const emptySchema = z.object({}).strict();

import { z } from 'zod';
import type { TaskProcess } from '../runner/process-identity';
import {
  assignmentTokenSchema,
  taskCompleteSchema,
  taskFailSchema,
  taskIdSchema,
} from '@agentcom/shared';

/**
 * The shape of `<state-dir>/state.json`, validated on every load. Reports reuse the wire schemas
 * of `task:complete` / `task:fail`, tagged with `type`, so a stored report is what will be sent,
 * but for a rate limit: kept as its end on this machine's clock (`rateLimitedUntil`), sent as what
 * is left of it then (`retryAfterMs`, see the report delivery).
 */

export const completeReportSchema = taskCompleteSchema.extend({ type: z.literal('complete') });
export const failReportSchema = taskFailSchema
  .omit({ retryAfterMs: true })
  .extend({ type: z.literal('fail') });
export const reportSchema = z.discriminatedUnion('type', [completeReportSchema, failReportSchema]);
export type CompleteReport = z.infer<typeof completeReportSchema>;
export type FailReport = z.infer<typeof failReportSchema>;
export type Report = z.infer<typeof reportSchema>;

/**
 * The process group leader of an `exec` task (`TaskProcess`, checked against the runner's type): a
 * sidecar restarted after a crash stops the group only if the leader is still this very process.
 */
export const taskProcessSchema = z
  .object({
    pid: z.number().int().min(1),
    startTime: z.number().int().min(0).optional(),
    bootId: z.string().min(1).max(100).optional(),
  })
  .strict() satisfies z.ZodType<TaskProcess>;
export type { TaskProcess };

/**
 * The task this sidecar holds.
 * - `working`: its process may be running; announced on reconnect so the hub keeps the lease.
 * - `finished`: its report is in the outbox, waiting for the hub's ack.
 */
export const heldTaskSchema = z
  .object({
    taskId: taskIdSchema,
    token: assignmentTokenSchema,
    attempt: z.number().int().min(1),
    state: z.enum(['working', 'finished']),
    /** Recorded once an `exec` task's process runs; absent in wake mode and in older files. */
    process: taskProcessSchema.optional(),
  })
  .strict();
export type HeldTask = z.infer<typeof heldTaskSchema>;

export const STATE_FILE_VERSION = 1;

export const stateFileSchema = z
  .object({
    version: z.literal(STATE_FILE_VERSION),
    current: heldTaskSchema.optional(),
    outbox: z.array(reportSchema),
  })
  .strict();
export type StateFile = z.infer<typeof stateFileSchema>;

import { z } from 'zod';

/** Safe identifier characters: no `:` (Redis key separator), no whitespace, no `{}` (hash tags). */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const agentIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(ID_PATTERN, 'letters, digits, ".", "_" or "-", starting with a letter or digit');
export type AgentId = z.infer<typeof agentIdSchema>;

/** Longest queue name. */
export const MAX_QUEUE_NAME_LENGTH = 64;
/** Longest task id (a BullMQ job id) agentcom takes: the API's, the protocol's, a listing cursor's. */
export const MAX_TASK_ID_LENGTH = 128;

export const queueNameSchema = z
  .string()
  .min(1)
  .max(MAX_QUEUE_NAME_LENGTH)
  .regex(ID_PATTERN, 'letters, digits, ".", "_" or "-", starting with a letter or digit');
export type QueueName = z.infer<typeof queueNameSchema>;

export const taskIdSchema = z
  .string()
  .min(1)
  .max(MAX_TASK_ID_LENGTH)
  .regex(ID_PATTERN, 'letters, digits, ".", "_" or "-", starting with a letter or digit');
export type TaskId = z.infer<typeof taskIdSchema>;

/** The fencing token of one assignment (the BullMQ lock token). */
export const assignmentTokenSchema = z.string().min(1).max(128);

export const DEFAULT_QUEUE = 'default';

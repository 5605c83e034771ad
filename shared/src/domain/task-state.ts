/**
 * A task's state as the API shows it (derived from the BullMQ job state plus the assignment).
 * `completed`, `failed` and `cancelled` are terminal.
 */
export const TASK_STATES = [
  'waiting',
  'delayed',
  'assigned',
  'running',
  'completed',
  'failed',
  'cancelled',
] as const;
export type TaskState = (typeof TASK_STATES)[number];

export const TERMINAL_TASK_STATES: readonly TaskState[] = ['completed', 'failed', 'cancelled'];

export function isTerminalTaskState(state: TaskState): boolean {
  return TERMINAL_TASK_STATES.includes(state);
}

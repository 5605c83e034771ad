import { z } from 'zod';

/**
 * The states of an agent, as stored in Redis and shown by the API.
 * - `offline`: no live connection.
 * - `idle`: connected, free, listed in the idle index of every queue it serves.
 * - `assigned`: a task was pushed; waiting for `task:accept` (ack timeout puts the task back).
 * - `working`: running a task; heartbeats extend the lease.
 * - `draining`: finishes its task, takes no new one.
 * - `cooldown`: reported a rate limit, or let an ack timeout pass; idle again at `cooldownUntil`.
 */
export const AGENT_STATES = [
  'offline',
  'idle',
  'assigned',
  'working',
  'draining',
  'cooldown',
] as const;
export type AgentState = (typeof AGENT_STATES)[number];
export const agentStateSchema = z.enum(AGENT_STATES);

export function isAgentState(value: unknown): value is AgentState {
  return typeof value === 'string' && (AGENT_STATES as readonly string[]).includes(value);
}

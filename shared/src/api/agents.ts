import { z } from 'zod';
import { agentIdSchema, queueNameSchema } from '../domain/ids';
import type { AgentState } from '../domain/agent-state';
import { queryInteger } from './query-integer';

/** `POST /v1/agents` body: mints the agent's token (shown once, stored hashed). */
export const createAgentBodySchema = z
  .object({
    agentId: agentIdSchema,
    queues: z.array(queueNameSchema).min(1).max(32).optional(),
  })
  .strict();
export type CreateAgentBody = z.infer<typeof createAgentBodySchema>;

export interface CreateAgentResponse {
  agentId: string;
  token: string;
  queues?: string[];
}

export const agentParamsSchema = z.object({ id: agentIdSchema }).strict();

/**
 * The most agents a page of `GET /v1/agents` holds, and the page without `limit`: the largest, so
 * that a client written before the pages (which read no `nextCursor`) still sees every agent of a
 * fleet of up to 1,000 (with a default of 100 it listed 100 of 150 and exited 0).
 */
export const MAX_AGENTS_PAGE_LIMIT = 1000;
export const DEFAULT_AGENTS_PAGE_LIMIT = MAX_AGENTS_PAGE_LIMIT;

/**
 * `GET /v1/agents`'s `cursor`: a page's `nextCursor`, opaque to clients. It is the last agent id
 * the page listed (the next page starts after it, in id order), so anything but an agent id is
 * not one the hub answered.
 */
const agentsCursorSchema = z.string().refine((cursor) => agentIdSchema.safeParse(cursor).success, {
  message: "not a cursor this API returned: pass back a page's nextCursor as it was",
});

/** `GET /v1/agents` query: a page of agents in id order; go on while there is a `nextCursor`. */
export const listAgentsQuerySchema = z
  .object({
    limit: queryInteger({ min: 1, max: MAX_AGENTS_PAGE_LIMIT }).default(DEFAULT_AGENTS_PAGE_LIMIT),
    cursor: agentsCursorSchema.optional(),
  })
  .strict();
export type ListAgentsQuery = z.output<typeof listAgentsQuerySchema>;

/** `GET /v1/agents` answer: a page; `nextCursor` only when more agents follow it. */
export interface ListAgentsResponse {
  agents: AgentView[];
  nextCursor?: string;
}

/** An agent as `GET /v1/agents` shows it. */
export interface AgentView {
  agentId: string;
  state: AgentState;
  queues: string[];
  labels: Record<string, string>;
  hubId?: string;
  currentTask?: { taskId: string; queue: string; since: number };
  lastHeartbeatAt?: number;
  connectedAt?: number;
  disconnectedAt?: number;
  cooldownUntil?: number;
  /**
   * Ack timeouts in a row (tasks pushed to the agent that it did not accept in time, since it
   * last accepted one); each doubles its cooldown, up to `ACK_COOLDOWN_MAX_MS`. Absent: none.
   */
  missedAcks?: number;
  /**
   * A drain asked for and not lifted: by an operator (`POST /v1/agents/:id/drain`, until resumed)
   * or by the agent itself (its sidecar stopping, until its connection ends). An agent holding a
   * task keeps its state (`working`) until the task ends, then drains. Absent: none.
   */
  drainRequested?: 'operator' | 'self';
  tasksDone: number;
  tasksFailed: number;
  version: number;
}

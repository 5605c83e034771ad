import { z } from 'zod';
import { agentIdSchema, queueNameSchema } from '../domain/ids';
import type { AgentState } from '../domain/agent-state';

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

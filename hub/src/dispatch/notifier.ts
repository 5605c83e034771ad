import type { HubError, TaskAssign, TaskCancel } from '@agentcom/shared';

/**
 * How the hub's logic reaches an agent's sidecar, wherever it is connected: the gateway
 * implements it with plain emits to the room `agent:<id>` through the Redis adapter (never
 * `emitWithAck`/`fetchSockets`, which wait on every replica).
 */
export interface AgentNotifier {
  assign(agentId: string, message: TaskAssign): void;
  cancel(agentId: string, message: TaskCancel): void;
  error(agentId: string, message: HubError): void;
  /** Closes the agent's connection, on whichever replica holds it. */
  disconnect(agentId: string): void;
}

import type { HubError, TaskAssign, TaskCancel } from '@agentcom/shared';

/**
 * How the hub's logic reaches an agent's sidecar, wherever it is connected: the gateway
 * implements it with plain emits to the room `agent:<id>` through the Redis adapter (never
 * `emitWithAck`/`fetchSockets`, which wait on every replica).
 */
export interface AgentNotifier {
  /**
   * Pushes a task to the agent's connection `socketId` (the one its record named when it was
   * claimed), or to whichever connection the agent has when none is known.
   */
  assign(agentId: string, message: TaskAssign, socketId?: string): void;
  cancel(agentId: string, message: TaskCancel): void;
  error(agentId: string, message: HubError): void;
  /** Closes the agent's connection, on whichever replica holds it. */
  disconnect(agentId: string): void;
}

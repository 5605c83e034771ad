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
  /**
   * Closes the agent's connections made with a token that is no longer its record's, on every
   * replica: each is told `message` (`hub:error`), then disconnected. Each replica decides when it
   * handles this, reading the record's token hash then, so one that handles it late keeps a
   * connection made with a newer token. Only the agent id and `message` go through Redis.
   */
  closeStaleTokenConnections(agentId: string, message: HubError): void;
}

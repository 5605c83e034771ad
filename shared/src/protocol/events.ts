import type {
  AgentHeartbeat,
  HubDraining,
  HubError,
  TaskAccept,
  TaskAssign,
  TaskCancel,
  TaskComplete,
  TaskFail,
  TaskLog,
  TaskProgress,
} from './messages';
import {
  ackSchema,
  heartbeatAckSchema,
  reportAckSchema,
  stateAckSchema,
  type Ack,
  type HeartbeatAck,
  type ReportAck,
  type StateAck,
} from './ack';
import {
  agentHeartbeatSchema,
  emptySchema,
  taskAcceptSchema,
  taskCompleteSchema,
  taskFailSchema,
  taskLogSchema,
  taskProgressSchema,
} from './messages';

/** hub → sidecar. */
export interface ServerToClientEvents {
  'task:assign': (msg: TaskAssign) => void;
  'task:cancel': (msg: TaskCancel) => void;
  'hub:draining': (msg: HubDraining) => void;
  'hub:error': (msg: HubError) => void;
}

/** sidecar → hub; every event carries an ack. */
export interface ClientToServerEvents {
  'task:accept': (msg: TaskAccept, ack: (res: Ack) => void) => void;
  'task:progress': (msg: TaskProgress, ack: (res: Ack) => void) => void;
  'task:log': (msg: TaskLog, ack: (res: Ack) => void) => void;
  'task:complete': (msg: TaskComplete, ack: (res: ReportAck) => void) => void;
  'task:fail': (msg: TaskFail, ack: (res: ReportAck) => void) => void;
  'agent:heartbeat': (msg: AgentHeartbeat, ack: (res: HeartbeatAck) => void) => void;
  'agent:drain': (msg: Record<string, never>, ack: (res: StateAck) => void) => void;
  'agent:resume': (msg: Record<string, never>, ack: (res: StateAck) => void) => void;
}

export type ClientEventName = keyof ClientToServerEvents;

/** The schema of each client event: the hub's allow-list; an event not listed here is refused. */
export const CLIENT_EVENT_SCHEMAS = {
  'task:accept': taskAcceptSchema,
  'task:progress': taskProgressSchema,
  'task:log': taskLogSchema,
  'task:complete': taskCompleteSchema,
  'task:fail': taskFailSchema,
  'agent:heartbeat': agentHeartbeatSchema,
  'agent:drain': emptySchema,
  'agent:resume': emptySchema,
} as const satisfies Record<ClientEventName, unknown>;

export const CLIENT_EVENTS = Object.keys(CLIENT_EVENT_SCHEMAS) as ClientEventName[];

/** The schema of each client event's ack (what the sidecar checks the hub's answer against). */
export const CLIENT_ACK_SCHEMAS = {
  'task:accept': ackSchema,
  'task:progress': ackSchema,
  'task:log': ackSchema,
  'task:complete': reportAckSchema,
  'task:fail': reportAckSchema,
  'agent:heartbeat': heartbeatAckSchema,
  'agent:drain': stateAckSchema,
  'agent:resume': stateAckSchema,
} as const satisfies Record<ClientEventName, unknown>;

import type { ErrorCode } from '../errors/codes';
import type { AgentState } from '../domain/agent-state';

/** The answer to every sidecar → hub event. */
export type AckOk<T extends object = object> = { ok: true } & T;
export interface AckError {
  ok: false;
  code: ErrorCode;
  message: string;
}
export type Ack<T extends object = object> = AckOk<T> | AckError;

/** `task:complete` / `task:fail` ack: `duplicate` is true when this replays an already applied report. */
export type ReportAck = Ack<{ duplicate?: boolean }>;
/** `hubId`: the replica that answered (shown by `agentcom-sidecar status`). */
export type HeartbeatAck = Ack<{ state: AgentState; abort?: boolean; hubId?: string }>;
export type StateAck = Ack<{ state: AgentState }>;

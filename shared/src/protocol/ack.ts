import { z } from 'zod';
import type { ErrorCode } from '../errors/codes';
import { agentStateSchema, type AgentState } from '../domain/agent-state';

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

/**
 * Schemas of the acks, for the sidecar to check what a hub answers before it reads a field. Not
 * strict: a newer hub of the same major may add fields (the heartbeat's `hubId` came that way),
 * which are dropped. `code` is any string: a newer hub may answer a code this version does not
 * know, which the sidecar takes as retryable.
 */
const ackErrorSchema = z.object({ ok: z.literal(false), code: z.string(), message: z.string() });
const ackWith = <T extends z.ZodRawShape>(shape: T) =>
  z.discriminatedUnion('ok', [z.object({ ok: z.literal(true), ...shape }), ackErrorSchema]);

export const ackSchema = ackWith({});
export const reportAckSchema = ackWith({ duplicate: z.boolean().optional() });
export const heartbeatAckSchema = ackWith({
  state: agentStateSchema,
  abort: z.boolean().optional(),
  hubId: z.string().optional(),
});
export const stateAckSchema = ackWith({ state: agentStateSchema });

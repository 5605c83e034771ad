import { isAgentState, type AgentState, type AgentView } from '@agentcom/shared';

/** An agent's Redis hash, parsed. Field names are the hash's field names. */
/** `drainRequested` of a drain the agent asked for itself; an operator's is `1`. */
export const SELF_DRAIN = 'self';

export interface AgentRecord {
  agentId: string;
  state: AgentState;
  version: number;
  tokenHash: string | undefined;
  allowedQueues: string[] | undefined;
  queues: string[];
  labels: Record<string, string>;
  hubId: string | undefined;
  socketId: string | undefined;
  taskId: string | undefined;
  taskQueue: string | undefined;
  token: string | undefined;
  /** Run time limit of the task in hand (ms), copied from the task at assignment. */
  taskTimeoutMs: number | undefined;
  /** When the hub told the agent its task timed out (the backstop fails it a grace later). */
  timeoutNotifiedAt: number | undefined;
  assignedAt: number | undefined;
  startedAt: number | undefined;
  disconnectedAt: number | undefined;
  cooldownUntil: number | undefined;
  connectedAt: number | undefined;
  lastHeartbeatAt: number | undefined;
  drainRequested: boolean;
  /**
   * The drain was asked by the agent itself (`agent:drain`, its sidecar stopping), not by an
   * operator: it lasts as long as the connection that asked, and a new connection drops it.
   */
  drainedBySelf: boolean;
  tasksDone: number;
  tasksFailed: number;
  /**
   * Ack timeouts in a row: pushed tasks the agent let pass since it last accepted one (the
   * sweeper counts them, `accept.lua` resets the count). Each one doubles its next cooldown.
   */
  missedAcks: number;
}

const num = (value: string | undefined): number | undefined =>
  value === undefined || value === '' ? undefined : Number(value);
const str = (value: string | undefined): string | undefined =>
  value === undefined || value === '' ? undefined : value;
const list = (value: string | undefined): string[] =>
  value ? value.split(',').filter((q) => q.length > 0) : [];

export function parseAgentRecord(
  agentId: string,
  hash: Record<string, string>,
): AgentRecord | undefined {
  if (Object.keys(hash).length === 0) return undefined;
  const state = hash.state;
  let labels: Record<string, string>;
  try {
    labels = hash.labels ? (JSON.parse(hash.labels) as Record<string, string>) : {};
  } catch {
    labels = {};
  }
  return {
    agentId,
    state: isAgentState(state) ? state : 'offline',
    version: num(hash.version) ?? 0,
    tokenHash: str(hash.tokenHash),
    allowedQueues: hash.allowedQueues ? list(hash.allowedQueues) : undefined,
    queues: list(hash.queues),
    labels,
    hubId: str(hash.hubId),
    socketId: str(hash.socketId),
    taskId: str(hash.taskId),
    taskQueue: str(hash.taskQueue),
    token: str(hash.token),
    taskTimeoutMs: num(hash.taskTimeoutMs),
    timeoutNotifiedAt: num(hash.timeoutNotifiedAt),
    assignedAt: num(hash.assignedAt),
    startedAt: num(hash.startedAt),
    disconnectedAt: num(hash.disconnectedAt),
    cooldownUntil: num(hash.cooldownUntil),
    connectedAt: num(hash.connectedAt),
    lastHeartbeatAt: num(hash.lastHeartbeatAt),
    drainRequested: hash.drainRequested === '1' || hash.drainRequested === SELF_DRAIN,
    drainedBySelf: hash.drainRequested === SELF_DRAIN,
    tasksDone: num(hash.tasksDone) ?? 0,
    tasksFailed: num(hash.tasksFailed) ?? 0,
    missedAcks: num(hash.missedAcks) ?? 0,
  };
}

/** The API's view of an agent (no token hash, no fencing token). */
export function toAgentView(record: AgentRecord): AgentView {
  const view: AgentView = {
    agentId: record.agentId,
    state: record.state,
    queues: record.queues.length > 0 ? record.queues : (record.allowedQueues ?? []),
    labels: record.labels,
    tasksDone: record.tasksDone,
    tasksFailed: record.tasksFailed,
    version: record.version,
  };
  if (record.hubId && record.state !== 'offline') view.hubId = record.hubId;
  if (record.taskId && record.taskQueue) {
    view.currentTask = {
      taskId: record.taskId,
      queue: record.taskQueue,
      since: record.startedAt ?? record.assignedAt ?? 0,
    };
  }
  if (record.lastHeartbeatAt !== undefined) view.lastHeartbeatAt = record.lastHeartbeatAt;
  if (record.connectedAt !== undefined) view.connectedAt = record.connectedAt;
  if (record.disconnectedAt !== undefined) view.disconnectedAt = record.disconnectedAt;
  if (record.cooldownUntil !== undefined) view.cooldownUntil = record.cooldownUntil;
  if (record.missedAcks > 0) view.missedAcks = record.missedAcks;
  if (record.drainRequested) view.drainRequested = record.drainedBySelf ? 'self' : 'operator';
  return view;
}

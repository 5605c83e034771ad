import type { AgentView } from '@agentcom/shared';
import { hashFromFlat } from '../redis/replies';

/** Socket.IO namespace of the live agents page (admin only: a UI session token in `auth`). */
export const UI_NAMESPACE = '/ui';

/** One agent transition as the events stream records it (`XADD` in the transition scripts). */
export interface UiTransition {
  /** Stream entry id (`<ms>-<seq>`): orders transitions and de-duplicates them in the browser. */
  id: string;
  agent: string;
  from: string;
  to: string;
  reason: string;
  /** Task id the transition concerns ("" when none). */
  task: string;
  /** Replica that made the transition. */
  hub: string;
  /** The agent record's version after the transition. */
  version: number;
  /** When it happened (ms, the clock of `hub`). */
  at: number;
}

/** Counts of one queue: BullMQ's (waiting, active, completed, failed, ...) as far as known. */
export type QueueCounts = Record<string, number>;

/** Everything the page shows, read at once; sent on connect and on every `snapshot:get`. */
export interface UiSnapshot {
  /** The replica this browser is connected to. */
  hubId: string;
  /** That replica's clock when it sent the snapshot (the browser derives its clock skew). */
  serverTime: number;
  agents: AgentView[];
  /** Every known queue, with BullMQ's counts when the hub was given them ({} otherwise). */
  queues: Record<string, QueueCounts>;
  /** The latest transitions, newest first. */
  events: UiTransition[];
}

export interface UiServerToClientEvents {
  snapshot: (snapshot: UiSnapshot) => void;
  /** Transitions read from the events stream by this replica, oldest first. */
  transitions: (events: UiTransition[]) => void;
}

/** What a `snapshot:get` asks for. */
export interface UiSnapshotRequest {
  /**
   * A snapshot whose read begins after the request (the page saw a transition its snapshot
   * cannot explain: an unknown agent, a version gap). Without it the replica may answer with
   * the snapshot it shares, read up to `SNAPSHOT_REUSE_MS` earlier, and the transitions since.
   */
  fresh?: boolean;
}

type UiSnapshotReply = (snapshot: UiSnapshot | { error: string }) => void;

export interface UiClientToServerEvents {
  /**
   * Asks for a snapshot (the page refreshes every ~10 s); refreshes the UI session. Without a
   * request (a page loaded before requests existed) it asks for a shared one.
   */
  'snapshot:get': (
    ...args: [ack: UiSnapshotReply] | [request: UiSnapshotRequest, ack: UiSnapshotReply]
  ) => void;
}

export interface UiSocketData {
  session: string;
}

/** Parses one events-stream entry; fields come as a flat `[name, value, ...]` list. */
export function parseTransitionEntry(id: string, fields: readonly string[]): UiTransition {
  const record = hashFromFlat(fields);
  const ms = Number(record.at);
  return {
    id,
    agent: record.agent ?? '',
    from: record.from ?? '',
    to: record.to ?? '',
    reason: record.reason ?? '',
    task: record.task ?? '',
    hub: record.hub ?? '',
    version: Number(record.version) || 0,
    at: Number.isFinite(ms) && ms > 0 ? ms : Number(id.split('-')[0]) || 0,
  };
}

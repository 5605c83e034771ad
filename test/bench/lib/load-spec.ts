/** The commands of the simulated-agents process (`load-agents.ts`), as the parent calls them. */

export interface InitArgs {
  /** Hub URLs; agent i starts on `urls[i % urls.length]` and rotates through the others. */
  urls: string[];
  idPrefix: string;
  count: number;
  queues: string[];
  /** `agent:heartbeat` period (the sidecar's default is 5000); 0: none. */
  heartbeatMs: number;
  /** Time an agent "works" on a task between `task:accept` and `task:complete`. */
  holdMs: number;
  /** Keep per-task assign/complete times (latency benchmark). */
  recordTimes?: boolean;
  mintConcurrency?: number;
  connectConcurrency?: number;
}

export interface InitResult {
  connected: number;
  failed: number;
  mintMs: number;
  connectMs: number;
  /** Connected agents per URL, in the order of `urls`. */
  perUrl: number[];
}

export interface LoadStats {
  connected: number;
  assigned: number;
  /** `task:complete` acknowledged ok (duplicates included). */
  completed: number;
  /** Distinct task ids completed. */
  completedUnique: number;
  /** Acks `{ok: true, duplicate: true}`: a replayed report. */
  duplicates: number;
  /** Accepts answered E_ASSIGNMENT_SUPERSEDED (the task had moved on: normal after a failover). */
  acceptsSuperseded: number;
  /** Completions answered E_ASSIGNMENT_SUPERSEDED. */
  reportsSuperseded: number;
  /** `task:cancel` received, and by reason. */
  cancels: number;
  cancelReasons: Record<string, number>;
  /** Heartbeat acks telling the agent to drop its task. */
  aborts: number;
  /** A `task:assign` while the agent held another task (must stay 0). */
  busyAssigns: number;
  heartbeatsOk: number;
  heartbeatsFailed: number;
  /** Error acks and failed requests by code. */
  errors: Record<string, number>;
  /** Process CPU time (user + system, ms) so far. */
  cpuMs: number;
}

export interface SteadyArgs {
  urls: string[];
  /** Tasks per second, evenly spaced. */
  rate: number;
  /** Measured part; a warm-up at the same rate comes first and is not counted. */
  durationMs: number;
  warmupMs: number;
  /** false: no task is polled through the API until it shows completed (default true). */
  watchVisible?: boolean;
}

export interface SteadyResult {
  submitted: number;
  accepted: number;
  failedPosts: number;
  /** POST sent → `task:assign` received (ms). */
  sentToAssign: number[];
  /** 201 received → `task:assign` received (ms; 0 when the assignment came first). */
  acceptedToAssign: number[];
  /** How many assignments arrived before the 201 of their POST. */
  assignBeforeAccepted: number;
  /** 201 received → `GET /v1/tasks/:id` shows `completed` (issued right after the complete ack). */
  acceptedToVisible: number[];
  /** Measured tasks that did not complete within the bound. */
  missing: number;
  achievedRate: number;
}

export interface ReconnectArgs {
  /** Only disconnects at or after this time (load process clock, `performance.now()`). */
  sinceMs?: number;
}

export interface ReconnectReport {
  connected: number;
  total: number;
  /** Agents that lost their connection since `sinceMs`. */
  affected: number;
  /** Per affected agent: disconnect → connected again (ms); missing ones are not reconnected yet. */
  downtimes: number[];
  notReconnected: number;
  /** First disconnect → last reconnect (ms). */
  allBackMs: number;
  perUrl: number[];
}

export type LoadSpec = {
  init: [InitArgs, InitResult];
  stats: [Record<string, never>, LoadStats];
  resetStats: [Record<string, never>, Record<string, never>];
  waitCompleted: [{ n: number; timeoutMs: number }, { completed: number; reached: boolean }];
  waitConnected: [{ n: number; timeoutMs: number }, { connected: number; reached: boolean }];
  completedIds: [Record<string, never>, string[]];
  /** `performance.now()` of the load process (to pass back as `sinceMs`). */
  clock: [Record<string, never>, number];
  steady: [SteadyArgs, SteadyResult];
  reconnects: [ReconnectArgs, ReconnectReport];
  /** Per task: first `task:assign` (epoch ms), completion acknowledged, as a duplicate, held by. */
  taskInfo: [
    { taskIds: string[] },
    Record<
      string,
      { assignedAt?: number; completed: boolean; duplicate: boolean; heldBy: string[] }
    >,
  ];
  close: [Record<string, never>, Record<string, never>];
};

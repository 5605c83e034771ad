import type { EventEmitter } from 'node:events';
import type { ExitCode } from './exit-codes';
import type { Report } from './outbox/state-schema';
import type { StopReason } from './runner/task-runner';

/**
 * What the daemon announces, one event per step of its life and of each task: for logs-free
 * observation, and for tests to await instead of sleeping.
 */
export type DaemonEvents = {
  /** Connected (again) to a hub; the outbox replay starts right after. */
  connected: [{ url: string }];
  disconnected: [{ reason: string }];
  /** A valid assignment was taken and recorded as `working`; `task:accept` is being sent. */
  assigned: [{ taskId: string; token: string; attempt: number }];
  /** The hub confirmed the assignment; the task starts. */
  accepted: [{ taskId: string }];
  /** The task ended and its report is durably in the outbox. */
  finished: [{ taskId: string; report: Report }];
  /** The task was given up without a report (accept refused, lease lost, superseded). */
  dropped: [{ taskId: string; reason: StopReason | 'not_accepted' }];
  /** The hub settled a report: it left the outbox. */
  reported: [
    { taskId: string; type: Report['type']; outcome: 'acked' | 'rejected'; code?: string },
  ];
  /** The daemon stopped by itself (refused, replaced); the CLI exits with `exitCode`. */
  ended: [{ exitCode: ExitCode; reason: string }];
};

export type DaemonEmitter = EventEmitter<DaemonEvents>;

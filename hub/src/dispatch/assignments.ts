import { randomUUID } from 'node:crypto';
import {
  AppError,
  type AgentState,
  type HeartbeatAck,
  type ReportAck,
  type TaskAccept,
  type TaskComplete,
  type TaskFail,
  type TaskLog,
  type TaskProgress,
} from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { AgentRecord } from '../fsm/agent-record';
import { restingState, type TransitionReason } from '../fsm/agent-machine';
import type { AgentStore } from '../fsm/agent-store';
import type { Logger } from '../logger';
import type { HubMetrics } from '../metrics/hub-metrics';
import type { QueueRegistry, TaskJob } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';
import { CANCELLED_PREFIX } from '../tasks/task-service';
import { agentIdOfToken } from './assignment-token';
import { isStaleAssignmentError } from './bull-errors';
import type { LeaseKeeper } from './lease-keeper';

/** How long the outcome of a finished assignment is kept for idempotent replays. */
const FINISHED_TTL_MS = 24 * 60 * 60 * 1000;
const MAX_CAS_RETRIES = 8;
/** A report lock outlives a crashed replica by this much at most. */
const REPORT_LOCK_TTL_MS = 30_000;
/** How long a report waits for another report of the same task before answering E_UNAVAILABLE. */
const REPORT_LOCK_WAIT_MS = 15_000;

export interface AssignmentServiceOptions {
  redis: Redis;
  keys: RedisKeys;
  agents: AgentStore;
  queues: QueueRegistry;
  leases: LeaseKeeper;
  leaseMs: number;
  logger: Logger;
  metrics: HubMetrics;
  /** Called when an agent became idle and may take work from these queues. */
  onAgentIdle: (queues: readonly string[]) => void;
}

export function holds(record: AgentRecord | undefined, taskId: string, token: string): boolean {
  return (
    record !== undefined &&
    (record.state === 'assigned' || record.state === 'working') &&
    record.taskId === taskId &&
    record.token === token
  );
}

const superseded = (taskId: string): AppError =>
  new AppError('E_ASSIGNMENT_SUPERSEDED', `The assignment of task ${taskId} is no longer current`);

/** Fields an agent record loses when its task is done. */
export const TASK_FIELDS = [
  'taskId',
  'taskQueue',
  'token',
  'assignedAt',
  'startedAt',
  'taskTimeoutMs',
  'timeoutNotifiedAt',
];

/**
 * What agents do with their assignments: accept, report progress/logs, complete, fail,
 * heartbeat. Every call is fenced by the assignment token: only the agent holding the current
 * token of a task may act on it, and BullMQ checks the same token as the job's lock.
 */
export class AssignmentService {
  constructor(private readonly options: AssignmentServiceOptions) {}

  async accept(agentId: string, msg: TaskAccept): Promise<{ state: AgentState }> {
    const { agents } = this.options;
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await agents.get(agentId);
      if (!holds(record, msg.taskId, msg.token) || !record) throw superseded(msg.taskId);
      if (record.state === 'working') return { state: 'working' };
      const startedAt = agents.now();
      const result = await agents.transition({
        agentId,
        from: 'assigned',
        to: 'working',
        version: record.version,
        reason: 'accept',
        task: msg.taskId,
        set: { startedAt },
        index: {
          ackDeadline: 'remove',
          ...(record.taskTimeoutMs ? { runDeadline: startedAt + record.taskTimeoutMs } : {}),
        },
      });
      if (!result.ok) continue;
      const queue = record.taskQueue ?? '';
      const handle = await this.options.queues.get(queue);
      const failed = await handle.worker.extendJobLocks(
        [msg.taskId],
        [msg.token],
        this.options.leaseMs,
      );
      if (failed.length > 0) {
        await this.release(agentId, msg.taskId, msg.token, 'lease_lost');
        throw superseded(msg.taskId);
      }
      this.options.leases.track(agentId, { taskId: msg.taskId, queue, token: msg.token });
      return { state: 'working' };
    }
    throw new AppError('E_UNAVAILABLE', 'The agent record changed too often; retry');
  }

  async progress(agentId: string, msg: TaskProgress): Promise<void> {
    const { job } = await this.currentJob(agentId, msg.taskId, msg.token);
    await job.updateProgress(
      msg.message ? { percent: msg.progress, message: msg.message } : msg.progress,
    );
  }

  async log(agentId: string, msg: TaskLog): Promise<void> {
    const { job } = await this.currentJob(agentId, msg.taskId, msg.token);
    for (const line of msg.lines) await job.log(line);
  }

  async complete(agentId: string, msg: TaskComplete): Promise<ReportAck> {
    // tokens start with their agent's id: another agent's token is refused before anything else
    if (agentIdOfToken(msg.token) !== agentId) throw superseded(msg.taskId);
    return this.oneReportAtATime(msg.taskId, () => this.applyComplete(agentId, msg));
  }

  async fail(agentId: string, msg: TaskFail): Promise<ReportAck> {
    if (agentIdOfToken(msg.token) !== agentId) throw superseded(msg.taskId);
    return this.oneReportAtATime(msg.taskId, () => this.applyFail(agentId, msg));
  }

  /**
   * Reports of one task are applied one at a time, cluster-wide: a replay that races the original
   * (a sidecar that reconnected to another replica while its first report was still being
   * applied) waits for it, then finds it applied and is answered as a duplicate.
   */
  private async oneReportAtATime(
    taskId: string,
    apply: () => Promise<ReportAck>,
  ): Promise<ReportAck> {
    const { redis, keys } = this.options;
    const key = keys.reporting(taskId);
    const mine = randomUUID();
    const deadline = Date.now() + REPORT_LOCK_WAIT_MS;
    while ((await redis.set(key, mine, 'PX', REPORT_LOCK_TTL_MS, 'NX')) !== 'OK') {
      if (Date.now() > deadline) {
        throw new AppError(
          'E_UNAVAILABLE',
          `another report of task ${taskId} is being applied; retry`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20)); // waiting for the other report
    }
    try {
      return await apply();
    } finally {
      if ((await redis.get(key)) === mine) await redis.del(key);
    }
  }

  private async applyComplete(agentId: string, msg: TaskComplete): Promise<ReportAck> {
    if (await this.alreadyFinished(msg.taskId, msg.token, 'completed')) {
      await this.release(agentId, msg.taskId, msg.token, 'complete', { tasksDone: 1 });
      return { ok: true, duplicate: true };
    }
    const { job, record } = await this.currentJob(agentId, msg.taskId, msg.token);
    // Stop extending first: the lock disappears with the completion, and a lease tick racing it
    // must not mistake that for a lost lease.
    this.options.leases.untrack(agentId, msg.token);
    try {
      await job.moveToCompleted(msg.result ?? null, msg.token, false);
    } catch (err) {
      return this.refused(agentId, msg.taskId, msg.token, err);
    }
    await this.markFinished(msg.taskId, msg.token, 'completed');
    await this.release(agentId, msg.taskId, msg.token, 'complete', { tasksDone: 1 });
    this.observe(record, 'completed');
    return { ok: true };
  }

  private async applyFail(agentId: string, msg: TaskFail): Promise<ReportAck> {
    if (await this.alreadyFinished(msg.taskId, msg.token, 'failed')) {
      await this.release(agentId, msg.taskId, msg.token, 'fail', { tasksFailed: 1 });
      return { ok: true, duplicate: true };
    }
    const { job, record } = await this.currentJob(agentId, msg.taskId, msg.token);
    const now = this.options.agents.now();
    let outcome: 'requeued' | 'cancelled' | 'failed' | 'retried' = 'requeued';
    const cooldownUntil =
      msg.rateLimitedUntil !== undefined && msg.rateLimitedUntil > now
        ? msg.rateLimitedUntil
        : undefined;
    this.options.leases.untrack(agentId, msg.token);
    try {
      if (cooldownUntil !== undefined) {
        // A quota, not a failure of the task: back to wait without using an attempt.
        await job.moveToWait(msg.token);
      } else {
        // An operator's cancel makes any failure of this attempt final, whatever the agent says.
        const cancelReason = await this.options.redis.get(
          this.options.keys.cancelRequested(msg.taskId),
        );
        const cancelled = msg.kind === 'cancelled' || cancelReason !== null;
        const error = new Error(
          cancelled ? `${CANCELLED_PREFIX}${cancelReason ?? msg.error}` : msg.error,
        );
        if (!msg.retryable || cancelled) error.name = 'UnrecoverableError';
        await job.moveToFailed(error, msg.token, false);
        const final =
          error.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
        outcome = cancelled ? 'cancelled' : final ? 'failed' : 'retried';
      }
    } catch (err) {
      return this.refused(agentId, msg.taskId, msg.token, err);
    }
    await this.markFinished(msg.taskId, msg.token, 'failed');
    if (cooldownUntil !== undefined) {
      await this.release(agentId, msg.taskId, msg.token, 'rate_limited', {}, cooldownUntil);
    } else {
      await this.release(agentId, msg.taskId, msg.token, 'fail', { tasksFailed: 1 });
    }
    this.observe(record, outcome);
    return { ok: true };
  }

  /**
   * A heartbeat: records liveness; tells the agent to abort a task it no longer holds. `stale`
   * means the record names another connection than `socketId` (this replica was unreachable and
   * the others swept its agents): the caller closes the connection so the sidecar reconnects and
   * its presence is recorded again.
   */
  async heartbeat(
    agentId: string,
    socketId: string,
    taskId?: string,
    token?: string,
  ): Promise<{ ack: HeartbeatAck; stale: boolean }> {
    const record = await this.options.agents.get(agentId);
    const stale = record?.socketId !== socketId;
    if (!stale) this.options.leases.beat(agentId);
    const state = record?.state ?? 'offline';
    if (taskId === undefined || token === undefined) return { ack: { ok: true, state }, stale };
    if (!holds(record, taskId, token)) return { ack: { ok: true, state, abort: true }, stale };
    if (!stale && record?.state === 'working' && !this.options.leases.heldBy(agentId)) {
      this.options.leases.track(agentId, { taskId, queue: record.taskQueue ?? '', token });
    }
    return { ack: { ok: true, state }, stale };
  }

  /**
   * Frees an agent from a task it holds under `token` (no-op if it holds something else):
   * it goes to its resting state (idle, draining or cooldown) and, when idle, back to the idle
   * indexes. Retries on concurrent changes.
   */
  async release(
    agentId: string,
    taskId: string,
    token: string,
    reason: TransitionReason,
    incr: Record<string, number> = {},
    cooldownUntil?: number,
  ): Promise<boolean> {
    const { agents } = this.options;
    this.options.leases.untrack(agentId, token);
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await agents.get(agentId);
      if (!holds(record, taskId, token) || !record) return false;
      const now = agents.now();
      const connected = record.disconnectedAt === undefined && record.socketId !== undefined;
      const to = connected
        ? restingState({
            drainRequested: record.drainRequested,
            cooldownUntil: cooldownUntil ?? record.cooldownUntil,
            now,
          })
        : 'offline';
      const result = await agents.transition({
        agentId,
        from: record.state,
        to,
        version: record.version,
        reason,
        task: taskId,
        del: TASK_FIELDS,
        incr,
        set: cooldownUntil !== undefined ? { cooldownUntil } : {},
        idleAdd: to === 'idle' ? record.queues : [],
        index: {
          ackDeadline: 'remove',
          disconnected: 'remove',
          runDeadline: 'remove',
          ...(to === 'cooldown' ? { cooldown: cooldownUntil ?? record.cooldownUntil ?? now } : {}),
        },
      });
      if (result.ok) {
        if (to === 'idle') this.options.onAgentIdle(record.queues);
        return true;
      }
    }
    this.options.logger.warn({ agentId, taskId }, 'could not release agent after retries');
    return false;
  }

  /** The job of the task the agent holds under `token`, or E_ASSIGNMENT_SUPERSEDED. */
  private async currentJob(
    agentId: string,
    taskId: string,
    token: string,
  ): Promise<{ job: TaskJob; record: AgentRecord }> {
    const record = await this.options.agents.get(agentId);
    if (!holds(record, taskId, token) || !record?.taskQueue) throw superseded(taskId);
    const handle = await this.options.queues.get(record.taskQueue);
    const job = await handle.queue.getJob(taskId);
    if (!job) throw superseded(taskId);
    return { job: job as TaskJob, record };
  }

  /** Counts an applied report (on this replica only: each report is applied once). */
  private observe(
    record: AgentRecord,
    outcome: 'completed' | 'requeued' | 'cancelled' | 'failed' | 'retried',
  ): void {
    const { metrics, agents } = this.options;
    const queue = record.taskQueue ?? '';
    if (outcome === 'completed') metrics.tasksCompleted.inc({ queue });
    else metrics.tasksFailed.inc({ queue, outcome });
    if (record.startedAt !== undefined) {
      metrics.runTime.observe(
        { queue, outcome },
        Math.max(0, agents.now() - record.startedAt) / 1000,
      );
    }
  }

  /**
   * BullMQ refused the report: the lock is gone or belongs to another assignment (reports of one
   * task are serialized, so a concurrent replay of this one has already been answered as a
   * duplicate). Free the agent and answer superseded.
   */
  private async refused(
    agentId: string,
    taskId: string,
    token: string,
    err: unknown,
  ): Promise<never> {
    if (!isStaleAssignmentError(err)) throw err;
    await this.release(agentId, taskId, token, 'lease_lost');
    throw superseded(taskId);
  }

  private async alreadyFinished(taskId: string, token: string, outcome: string): Promise<boolean> {
    const value = await this.options.redis.get(this.options.keys.finished(taskId));
    return value === `${outcome} ${token}`;
  }

  private async markFinished(taskId: string, token: string, outcome: string): Promise<void> {
    await this.options.redis.set(
      this.options.keys.finished(taskId),
      `${outcome} ${token}`,
      'PX',
      FINISHED_TTL_MS,
    );
  }
}

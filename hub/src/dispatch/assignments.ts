import { randomUUID } from 'node:crypto';
import {
  AppError,
  isAppError,
  MAX_TASK_LOG_LINES,
  type AgentState,
  type HeartbeatAck,
  type ReportAck,
  type TaskAccept,
  type TaskAssign,
  type TaskCancel,
  type TaskComplete,
  type TaskFail,
  type TaskLog,
  type TaskProgress,
} from '@agentcom/shared';
import type { Redis } from 'ioredis';
import { HeartbeatBatch } from '../agents/heartbeat-batch';
import type { HubConfig } from '../config';
import type { AgentRecord } from '../fsm/agent-record';
import { restingState, type TransitionReason } from '../fsm/agent-machine';
import {
  TOKEN_REVOKED,
  tokenRevoked,
  type AgentPresence,
  type AgentStore,
  type ClaimStep,
  type TransitionRequest,
} from '../fsm/agent-store';
import type { Logger } from '../logger';
import type { HubMetrics } from '../metrics/hub-metrics';
import type { QueueRegistry } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';
import { luaScript } from '../redis/scripts';
import type { IdempotencyKeys } from '../tasks/idempotency-keys';
import { CANCELLED_PREFIX } from '../tasks/task-service';
import { assignMessage, taskFromJob } from './assign-message';
import { agentIdOfToken } from './assignment-token';
import { jobToComplete, moveToCompletedArgs } from './bull-completion';
import { isStaleAssignmentError } from './bull-errors';
import type { HeldTask, LeaseKeeper } from './lease-keeper';
import {
  failureTaken,
  finishedMarker,
  reportIntent,
  type JobCounts,
  type ReportOutcome,
} from './report-intent';

/** Appends a log batch in one step (see {@link AssignmentService.log}). */
const APPEND_TASK_LOG = luaScript('appendTaskLog');
/** `appendTaskLog.lua`'s reply when the record's token hash is not the connection's. */
const LOG_TOKEN_REVOKED = -2;
/** Records a task's progress in one step (see {@link AssignmentService.progress}). */
const UPDATE_TASK_PROGRESS = luaScript('updateTaskProgress');
/** `updateTaskProgress.lua`'s reply when the record's token hash is not the connection's. */
const PROGRESS_TOKEN_REVOKED = -2;
/** How long the outcome of a finished assignment is kept for idempotent replays. */
const FINISHED_TTL_MS = 24 * 60 * 60 * 1000;
const MAX_CAS_RETRIES = 8;
/** A report lock outlives a crashed replica by this much at most. */
const REPORT_LOCK_TTL_MS = 5_000;
/**
 * How long a report waits for another report of the same task before answering E_UNAVAILABLE:
 * longer than a dead replica's lock lives, shorter than a sidecar waits for its ack (10 s).
 */
const REPORT_LOCK_WAIT_MS = 7_000;
/**
 * A heartbeat that names no task, from the connection an `assigned` record names, this long after
 * the assignment (or half the ack timeout, when that is shorter): the push was not received.
 * Sent after the push had reached the sidecar, a heartbeat names the task (the sidecar records it
 * before anything else); within this much it may have been sent before.
 */
const UNRECEIVED_PUSH_AFTER_MS = 1_000;

/**
 * The longest rest a rate limit the agent reports can give it, from now (as long as the
 * sidecar's `--retry-after` may be): a time beyond, such as microseconds sent for milliseconds,
 * would rest the agent for ever, since neither a resume nor a reconnect ends the agent's own rest.
 */
export const MAX_RATE_LIMIT_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * What a report does to its job: complete it, or fail it, which uses an attempt unless a quota
 * puts the job back to wait.
 */
type Report = { outcome: 'completed' } | { outcome: 'failed'; usesAttempt: boolean };
const COMPLETION: Report = { outcome: 'completed' };

/** A report whose first step ({@link AssignmentService.beginReport}) let it go on. */
interface BegunReport {
  record: AgentRecord;
  lockId: string;
  /** The finished key's value before this report (this report's intent: a replay). */
  previousMarker: string;
  /** This report's intent, the finished key's value now. */
  intent: string;
  cancelReason: string | undefined;
}

export interface AssignmentServiceOptions {
  redis: Redis;
  keys: RedisKeys;
  agents: AgentStore;
  queues: QueueRegistry;
  leases: LeaseKeeper;
  /** Retention of completed jobs (BullMQ `removeOnComplete`), as set when tasks are created. */
  retention: Pick<HubConfig['retention'], 'completed'>;
  logger: Logger;
  metrics: HubMetrics;
  /** Pushed tasks must be accepted within this (`ACK_TIMEOUT_MS`): the claims' ack deadline. */
  ackTimeoutMs: number;
  /** A fetched job's lock lasts this long (`LEASE_MS`). */
  leaseMs: number;
  /** Called with the dispatch step a report's release ran, for the dispatcher to finish it. */
  onClaimed: (step: ClaimStep) => void;
  /** Called when an agent became idle and may take work from these queues. */
  onAgentIdle: (queues: readonly string[]) => void;
  /** Called when a task was put back to wait and no agent became idle with it. */
  onTaskWaiting: (queue: string) => void;
  /** A task ended here keeps its idempotency key for a while (BullMQ's end deletes it). */
  idempotency: IdempotencyKeys;
}

export function holds(
  record: Pick<AgentRecord, 'state' | 'taskId' | 'token'> | undefined,
  taskId: string,
  token: string,
): boolean {
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

/** Release reasons that are the agent's own report of its task (the others are the hub's). */
const AGENT_REPORTS: readonly TransitionReason[] = ['complete', 'fail', 'rate_limited'];

/**
 * What agents do with their assignments: accept, report progress/logs, complete, fail,
 * heartbeat. Every call is fenced by the assignment token: only the agent holding the current
 * token of a task may act on it, and BullMQ checks the same token as the job's lock.
 *
 * A call made for a connection is also fenced by the agent token: `tokenHash` is the hash of the
 * token the connection authenticated with, compared with the record's in the read or script the
 * call makes anyway (no round trip more). When the token was rotated or revoked since and the
 * message closing the connection did not reach this replica (Redis pub/sub delivers at most once),
 * the call changes nothing and throws {@link tokenRevoked} (`E_UNAUTHORIZED`): the gateway answers
 * it and ends the connection. The hub's own reports (the run-timeout backstop) pass none.
 */
export class AssignmentService {
  private readonly heartbeats: HeartbeatBatch;
  /**
   * Agents whose last heartbeat said they hold no task while their record says they work on
   * this one. A second such heartbeat in a row puts the task back (see {@link heartbeat}).
   */
  private readonly notHeld = new Map<string, { taskId: string; token: string }>();

  constructor(private readonly options: AssignmentServiceOptions) {
    this.heartbeats = new HeartbeatBatch((beats) => options.agents.heartbeats(beats));
  }

  /**
   * assigned → working, one script, fenced by the job's BullMQ lock too: an accept that comes
   * after the lock ran out (no sweep ended the assignment in time, the stalled checker put the
   * job back, another agent may run it) is refused. The same script renews the lock for a whole
   * lease, since the lease keeper extends it only from its next tick, while the connection that
   * accepted is open (`connected`): one that closed while the script ran was untracked by its
   * disconnect already, and is not tracked again.
   */
  async accept(
    agentId: string,
    msg: TaskAccept,
    connected: () => boolean = () => true,
    tokenHash?: string,
  ): Promise<{ state: AgentState }> {
    const accepted = await this.options.agents.accept(
      agentId,
      msg.taskId,
      msg.token,
      this.options.leaseMs,
      tokenHash,
    );
    if (!accepted) throw superseded(msg.taskId);
    if (connected()) {
      this.options.leases.track(agentId, {
        taskId: msg.taskId,
        queue: accepted.taskQueue,
        token: msg.token,
      });
    }
    return { state: 'working' };
  }

  /**
   * Records the task's progress as BullMQ's `job.updateProgress` does (the job's `progress`, a
   * `progress` event in the queue's events stream, the value serialised alike), with BullMQ's own
   * script inside one of agentcom's (`updateTaskProgress.lua`), which checks in the same step that
   * the agent holds the task under the token and, with `tokenHash`, that the connection's token
   * is still the agent's ({@link tokenRevoked} otherwise). One round trip when this replica
   * extends the task's lease, so knows its queue; otherwise the record is read first for it.
   */
  async progress(agentId: string, msg: TaskProgress, tokenHash?: string): Promise<void> {
    const taskQueue = await this.heldQueue(agentId, msg.taskId, msg.token, tokenHash);
    const { redis, keys } = this.options;
    const progress = msg.message ? { percent: msg.progress, message: msg.message } : msg.progress;
    const reply = await UPDATE_TASK_PROGRESS.run<number>(
      redis,
      [
        keys.agent(agentId),
        keys.bullJob(taskQueue, msg.taskId),
        keys.bullEvents(taskQueue),
        keys.bullMeta(taskQueue),
        keys.bullLock(taskQueue, msg.taskId),
      ],
      [msg.taskId, msg.token, tokenHash ?? '', JSON.stringify(progress)],
    );
    if (reply === PROGRESS_TOKEN_REVOKED) throw tokenRevoked();
    if (reply < 0) throw superseded(msg.taskId);
  }

  /**
   * Appends the lines to the job's log, which keeps the last {@link MAX_TASK_LOG_LINES}: the
   * whole batch in one script (`appendTaskLog.lua`; BullMQ's `addLog` was a round trip a line),
   * which checks in the same step that the agent holds the task under the token and, with
   * `tokenHash`, that the connection's token is still the agent's ({@link tokenRevoked}
   * otherwise). One round trip when this replica extends the task's lease, so knows its queue;
   * otherwise the record is read first for it.
   */
  async log(agentId: string, msg: TaskLog, tokenHash?: string): Promise<void> {
    const taskQueue = await this.heldQueue(agentId, msg.taskId, msg.token, tokenHash);
    const { redis, keys } = this.options;
    const length = await APPEND_TASK_LOG.run<number>(
      redis,
      [
        keys.agent(agentId),
        keys.bullJob(taskQueue, msg.taskId),
        keys.bullJobLogs(taskQueue, msg.taskId),
        keys.bullLock(taskQueue, msg.taskId),
      ],
      [MAX_TASK_LOG_LINES, msg.taskId, msg.token, tokenHash ?? '', ...msg.lines],
    );
    if (length === LOG_TOKEN_REVOKED) throw tokenRevoked();
    if (length < 0) throw superseded(msg.taskId);
  }

  async complete(agentId: string, msg: TaskComplete, tokenHash?: string): Promise<ReportAck> {
    // tokens start with their agent's id: another agent's token is refused before anything else
    if (agentIdOfToken(msg.token) !== agentId) throw superseded(msg.taskId);
    const atOnce = await this.completeAtOnce(agentId, msg, tokenHash);
    if (atOnce) return atOnce;
    const begun = await this.beginReport(agentId, msg.taskId, msg.token, COMPLETION, tokenHash);
    if (begun.status === 'duplicate') return begun.ack;
    const { record, lockId } = begun;
    return this.underReportLock(msg.taskId, lockId, async () => {
      const finishRest = () =>
        this.finish(record, msg.token, lockId, 'completed', 'complete', { tasksDone: 1 });
      const handle = await this.options.queues.get(record.taskQueue ?? '');
      const job = jobToComplete(handle.queue, msg.taskId, this.options.retention.completed);
      // read before: a job that no retention keeps is gone after its completion
      const idempotencyKey = await this.options.idempotency.keyOf(handle.name, msg.taskId);
      // Stop extending first: the lock disappears with the completion, and a lease tick racing it
      // must not mistake that for a lost lease.
      this.options.leases.untrack(agentId, msg.token);
      try {
        await job.moveToCompleted(msg.result ?? null, msg.token, false);
      } catch (err) {
        return this.refusedByBull(agentId, msg, COMPLETION, begun, finishRest, err);
      }
      // counted once BullMQ's part is done: a replay after a failed rest is answered as a duplicate
      this.observe(record, 'completed');
      const settled = this.options.idempotency.settle(handle.name, msg.taskId, idempotencyKey);
      await Promise.all([finishRest(), settled]);
      return { ok: true };
    });
  }

  /**
   * The common completion in one script (`completeAtOnce.lua`): this replica extends the task's
   * lease (so it knows the queue), no other report of the task is under way or applied, the
   * agent holds the task and BullMQ takes the completion. The job is completed, the agent
   * released and the next task handed out in one round trip. Undefined (nothing changed) when
   * anything is unusual: the step-by-step path of {@link complete} runs instead. A settle of the
   * task's idempotency key that Redis refused inside the script is run again later.
   */
  private async completeAtOnce(
    agentId: string,
    msg: TaskComplete,
    tokenHash: string | undefined,
  ): Promise<ReportAck | undefined> {
    const { agents, keys, leases } = this.options;
    const held = leases.heldBy(agentId);
    if (held?.taskId !== msg.taskId || held.token !== msg.token) return undefined;
    const { taskId, token } = msg;
    const handle = await this.options.queues.get(held.queue);
    const job = jobToComplete(handle.queue, taskId, this.options.retention.completed);
    const bull = moveToCompletedArgs(job, msg.result, token);
    leases.untrack(agentId, token);
    const done = await agents.completeAtOnce({
      taskId,
      token,
      tokenHash,
      bull,
      // the plain case; any other record (draining, a cooldown, disconnected) is released below
      release: {
        agentId,
        from: 'working',
        to: 'idle',
        reason: 'complete',
        task: taskId,
        expect: { taskId, token, drainRequested: '', cooldownUntil: '', disconnectedAt: '' },
        del: TASK_FIELDS,
        incr: { tasksDone: 1 },
        idleAddOwn: true,
        index: { runDeadline: 'remove' },
        always: {
          set: [
            {
              key: keys.finished(taskId),
              value: finishedMarker('completed', token),
              ttlMs: FINISHED_TTL_MS,
            },
          ],
        },
      },
      claimQueue: held.queue,
      ackTimeoutMs: this.options.ackTimeoutMs,
      lockMs: this.options.leaseMs,
    });
    if (done.status === 'slow') return undefined;
    if (done.unsettled) {
      // Redis refused the settle inside the script, after the rest went through: run again later
      const { idempotencyKey, error } = done.unsettled;
      await this.options.idempotency.defer(held.queue, taskId, idempotencyKey, error);
    }
    if (done.result.ok) {
      if (done.step) this.options.onClaimed(done.step);
      // the freed agent stays idle when the claim took another one, or none
      if (done.step?.claim.agentId !== agentId) this.freedBesides(done.queues, held.queue);
    } else {
      // completed, but the record is not the plain one the release expected: read it again
      await this.release(agentId, taskId, token, 'complete', { tasksDone: 1 });
    }
    this.observe({ taskQueue: held.queue, startedAt: done.startedAt }, 'completed');
    this.options.metrics.completionsAtOnce.inc({ queue: held.queue });
    return { ok: true };
  }

  async fail(agentId: string, msg: TaskFail, tokenHash?: string): Promise<ReportAck> {
    if (agentIdOfToken(msg.token) !== agentId) throw superseded(msg.taskId);
    const now = this.options.agents.now();
    // A rate limit is a quota, not a failure of the task, whenever it ends: one already over (a
    // report delivered late from the sidecar's outbox; an older sidecar's clock behind the hub's)
    // requeues the task as well, with no rest; one too far ahead rests the agent at most a week.
    // `retryAfterMs` is a duration, so the rest is on Redis's clock whatever the agent's machine
    // says; `rateLimitedUntil` (older sidecars) is a time on the agent's own clock, taken as is.
    const limitedUntil =
      msg.retryAfterMs !== undefined ? now + msg.retryAfterMs : msg.rateLimitedUntil;
    const rateLimited = limitedUntil !== undefined;
    const cooldownUntil =
      limitedUntil !== undefined && limitedUntil > now
        ? Math.min(limitedUntil, now + MAX_RATE_LIMIT_MS)
        : undefined;
    const report: Report = { outcome: 'failed', usesAttempt: !rateLimited };
    const begun = await this.beginReport(agentId, msg.taskId, msg.token, report, tokenHash);
    if (begun.status === 'duplicate') return begun.ack;
    const { record, lockId, cancelReason } = begun;
    return this.underReportLock(msg.taskId, lockId, async () => {
      const finishRest = () =>
        rateLimited
          ? this.finish(record, msg.token, lockId, 'failed', 'rate_limited', {}, cooldownUntil)
          : this.finish(record, msg.token, lockId, 'failed', 'fail', { tasksFailed: 1 });
      let outcome: 'requeued' | 'cancelled' | 'failed' | 'retried' = 'requeued';
      let idempotencyKey: string | undefined;
      this.options.leases.untrack(agentId, msg.token);
      try {
        const job = await this.options.queues.job(record.taskQueue ?? '', msg.taskId);
        if (!job) throw superseded(msg.taskId);
        idempotencyKey = job.deduplicationId;
        if (rateLimited && cancelReason === undefined) {
          // A quota, not a failure of the task: back to wait without using an attempt (unless an
          // operator cancelled the task meanwhile: put back, it would wait for an agent to run it).
          await job.moveToWait(msg.token);
        } else {
          // An operator's cancel makes any failure of this attempt final, whatever the agent says.
          const cancelled = msg.kind === 'cancelled' || cancelReason !== undefined;
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
        return this.refusedByBull(agentId, msg, report, begun, finishRest, err);
      }
      // counted once BullMQ's part is done: a replay after a failed rest is answered as a duplicate
      this.observe(record, outcome);
      const ended = outcome === 'failed' || outcome === 'cancelled';
      const queue = record.taskQueue ?? '';
      const settled = ended && this.options.idempotency.settle(queue, msg.taskId, idempotencyKey);
      await Promise.all([finishRest(), settled]);
      // the task is back to wait for another agent, at once: the reporting agent rests, so its
      // release triggered no dispatch step
      if (outcome === 'requeued' && cooldownUntil !== undefined) {
        this.options.onTaskWaiting(record.taskQueue ?? '');
      }
      return { ok: true };
    });
  }

  /**
   * The first step of a report (one script, `beginReport.lua`): the task's report lock, so
   * reports of one task are applied one at a time cluster-wide (a replay racing the original waits
   * for it, then finds it applied and is answered as a duplicate), the duplicate check, the
   * holder check and the report's intent (see `report-intent.ts`). A replica that dies holding
   * the lock holds it for {@link REPORT_LOCK_TTL_MS} at most; a report waits
   * {@link REPORT_LOCK_WAIT_MS} at most, less than a sidecar waits for its ack, then answers
   * E_UNAVAILABLE (the sidecar retries).
   */
  private async beginReport(
    agentId: string,
    taskId: string,
    token: string,
    report: Report,
    tokenHash: string | undefined,
  ): Promise<{ status: 'duplicate'; ack: ReportAck } | ({ status: 'ok' } & BegunReport)> {
    const { agents } = this.options;
    const { outcome } = report;
    const lockId = randomUUID();
    const deadline = Date.now() + REPORT_LOCK_WAIT_MS;
    for (;;) {
      const begun = await this.underReportLock(taskId, lockId, () =>
        agents.beginReport({
          agentId,
          taskId,
          token,
          tokenHash,
          outcome,
          lockId,
          lockTtlMs: REPORT_LOCK_TTL_MS,
          finishedTtlMs: FINISHED_TTL_MS,
        }),
      );
      switch (begun.status) {
        case 'superseded':
          if (await this.appliedByIntent(taskId, token, report, begun.previousMarker)) {
            return { status: 'duplicate', ack: { ok: true, duplicate: true } };
          }
          throw superseded(taskId);
        case 'duplicate': {
          try {
            const reason = outcome === 'completed' ? 'complete' : 'fail';
            const incr: Record<string, number> =
              outcome === 'completed' ? { tasksDone: 1 } : { tasksFailed: 1 };
            if (begun.record && holds(begun.record, taskId, token)) {
              await this.finish(begun.record, token, lockId, outcome, reason, incr);
              // the report stopped after its BullMQ part (its replica died, Redis refused the
              // rest): the settle of the task's idempotency key after it may not have run either
              // (its name is read from the job: one that no retention keeps took it along)
              const queue = begun.record.taskQueue ?? '';
              const { idempotency } = this.options;
              await idempotency.settle(queue, taskId, await idempotency.keyOf(queue, taskId));
            }
          } finally {
            await this.unlock(taskId, lockId);
          }
          return { status: 'duplicate', ack: { ok: true, duplicate: true } };
        }
        case 'ok':
          return { ...begun, lockId };
        case 'busy':
          if (Date.now() > deadline) {
            throw new AppError(
              'E_UNAVAILABLE',
              `another report of task ${taskId} is being applied; retry`,
            );
          }
          await new Promise((resolve) => setTimeout(resolve, 20)); // waiting for the other report
      }
    }
  }

  /**
   * The last step of an applied report, in one script: the outcome is recorded for replays, the
   * report lock is released, and the agent goes to its resting state (compare-and-set on the
   * version read by `beginReport`; if the record changed meanwhile, {@link release} retries).
   */
  private async finish(
    record: AgentRecord,
    token: string,
    lockId: string,
    outcome: ReportOutcome,
    reason: TransitionReason,
    incr: Record<string, number>,
    cooldownUntil?: number,
  ): Promise<void> {
    const { keys } = this.options;
    const taskId = record.taskId ?? '';
    const always = {
      set: [
        {
          key: keys.finished(taskId),
          value: finishedMarker(outcome, token),
          ttlMs: FINISHED_TTL_MS,
        },
      ],
      delIf: [{ key: keys.reporting(taskId), value: lockId }],
    };
    const done = await this.releaseRecord(record, reason, incr, cooldownUntil, always, true);
    if (!done) await this.release(record.agentId, taskId, token, reason, incr, cooldownUntil);
  }

  /**
   * A report refused because the agent no longer holds the task may still be this report's own:
   * its replica died after BullMQ's part, and a reconnect released the agent before the replay
   * came. Its intent names the queue, so the job is found without the agent's record. Records
   * the outcome so later replays are plain duplicates.
   */
  private async appliedByIntent(
    taskId: string,
    token: string,
    report: Report,
    previousMarker: string,
  ): Promise<boolean> {
    if (!(await this.appliedByBull(taskId, token, report, previousMarker))) return false;
    const marker = finishedMarker(report.outcome, token);
    await this.options.agents.replaceFinished(taskId, previousMarker, marker, FINISHED_TTL_MS);
    return true;
  }

  /**
   * Whether BullMQ applied the report of `token` whose intent `marker` records (the finished
   * key's value before this replay): for a completion, the job in the intent's queue is
   * completed (another assignment would have replaced the intent with its own before
   * completing); for a failure, see {@link failureTaken}.
   */
  private async appliedByBull(
    taskId: string,
    token: string,
    report: Report,
    marker: string,
  ): Promise<boolean> {
    const intent = reportIntent(marker, token);
    if (intent?.outcome !== report.outcome || intent.queue === '') return false;
    if (intent.outcome === 'failed') {
      const usesAttempt = report.outcome === 'failed' && report.usesAttempt;
      return failureTaken(intent, await this.jobCounts(intent.queue, taskId), token, usesAttempt);
    }
    const job = await this.options.queues.job(intent.queue, taskId);
    return (await job?.getState().catch(() => 'unknown')) === 'completed';
  }

  /** The counts of a job a failure's intent is compared with (see {@link failureTaken}). */
  private async jobCounts(queue: string, taskId: string): Promise<JobCounts> {
    const { redis, keys } = this.options;
    const [[timestamp, attemptsMade, stalledCount], lock] = await Promise.all([
      redis.hmget(keys.bullJob(queue, taskId), 'timestamp', 'atm', 'stc'),
      redis.get(keys.bullLock(queue, taskId)),
    ]);
    return {
      exists: timestamp !== null,
      attemptsMade: Number(attemptsMade ?? 0),
      stalledCount: Number(stalledCount ?? 0),
      lock: lock ?? undefined,
    };
  }

  /**
   * BullMQ refused a report's part (`err`). The replay of a report whose replica died after
   * BullMQ's part finds its intent and the job as that part left it: it finishes the report's
   * remaining part (`finishRest`: the agent's record and the finished marker) and is answered as
   * a duplicate, counted nowhere (the dead replica counted it, or nobody). Otherwise the intent
   * must not outlive a part BullMQ refused (a replay would read it as its own applied report,
   * and the task view would name this agent): the finished key is put back. Any other error
   * keeps it: BullMQ may have applied the part and lost the reply.
   */
  private async refusedByBull(
    agentId: string,
    msg: { taskId: string; token: string },
    report: Report,
    begun: BegunReport,
    finishRest: () => Promise<void>,
    err: unknown,
  ): Promise<ReportAck> {
    const { taskId, token } = msg;
    const stale = isStaleAssignmentError(err);
    if (stale && (await this.appliedByBull(taskId, token, report, begun.previousMarker))) {
      await finishRest();
      return { ok: true, duplicate: true };
    }
    if (stale || isAppError(err)) {
      await this.options.agents.replaceFinished(
        taskId,
        begun.intent,
        begun.previousMarker,
        FINISHED_TTL_MS,
      );
    }
    return this.refused(agentId, taskId, token, err);
  }

  /**
   * Runs a step of a report that holds (or may have taken) the task's report lock `lockId`. An
   * applied report's last script releases the lock (`finish`); a step that fails (BullMQ refuses,
   * Redis answers an error part-way, `finish` itself fails) releases it here, so the sidecar's
   * replay is answered at once instead of waiting up to {@link REPORT_LOCK_TTL_MS} for the lock to
   * run out. The report's intent stays in the finished key: from it, the replay finishes an apply
   * whose BullMQ part was done (see {@link refusedByBull}).
   */
  private async underReportLock<T>(
    taskId: string,
    lockId: string,
    step: () => Promise<T>,
  ): Promise<T> {
    try {
      return await step();
    } catch (err) {
      await this.unlock(taskId, lockId);
      throw err;
    }
  }

  /**
   * Drops the task's report lock if it is still `lockId`'s. Best effort, on paths that already
   * have an answer or an error of their own: a failure here is logged, not thrown (the lock then
   * runs out by its TTL).
   */
  private async unlock(taskId: string, lockId: string): Promise<void> {
    try {
      await this.options.agents.releaseReportLock(taskId, lockId);
    } catch (err) {
      this.options.logger.warn(
        { taskId, err: String(err) },
        'could not release a report lock; it runs out by its TTL',
      );
    }
  }

  /**
   * A heartbeat: records liveness; tells the agent to abort a task it no longer holds. `stale`
   * means the record names another connection than `socketId` (this replica was unreachable and
   * the others swept its agents): the caller closes the connection so the sidecar reconnects and
   * its presence is recorded again. `cancel`: the heartbeat names the task the agent works on and
   * an operator asked to cancel it; the caller sends it `task:cancel` again, as the first one
   * may have been lost (sent while the agent had no connection, or received before the
   * assignment it cancels). The check is part of the batched heartbeat script: no round trip more.
   * `resend`: the record, on this connection, is `assigned` a task the heartbeat does not name,
   * since long enough for the push to have arrived ({@link unreceivedPush}); the caller sends it
   * on this connection, ahead of the ack. `revoked`: the record's token is no longer the one the
   * connection authenticated with (`tokenHash`): the token was revoked or replaced and the
   * message that closes its connections did not reach this replica (Redis pub/sub delivers at
   * most once); the caller ends the connection as that message would have.
   */
  async heartbeat(
    agentId: string,
    socketId: string,
    tokenHash: string,
    taskId?: string,
    token?: string,
  ): Promise<{
    ack: HeartbeatAck;
    stale: boolean;
    revoked?: true;
    cancel?: TaskCancel;
    resend?: TaskAssign;
  }> {
    const presence = await this.heartbeats.check({ agentId, socketId, tokenHash });
    if (presence?.tokenRevoked) {
      return {
        ack: { ok: false, code: 'E_UNAUTHORIZED', message: TOKEN_REVOKED },
        stale: false,
        revoked: true,
      };
    }
    const stale = presence?.socketId !== socketId;
    if (!stale) this.options.leases.beat(agentId);
    if (!stale) this.reconcile(agentId, presence, taskId);
    const state = presence?.state ?? 'offline';
    if (taskId === undefined || token === undefined) {
      const resend =
        stale || taskId !== undefined ? undefined : await this.unreceivedPush(presence);
      return resend
        ? { ack: { ok: true, state }, stale, resend }
        : { ack: { ok: true, state }, stale };
    }
    if (!holds(presence, taskId, token)) return { ack: { ok: true, state, abort: true }, stale };
    if (!stale && presence?.state === 'working' && !this.options.leases.heldBy(agentId)) {
      this.options.leases.track(agentId, { taskId, queue: presence.taskQueue ?? '', token });
    }
    if (!stale && presence?.cancelRequested === true) {
      return { ack: { ok: true, state }, stale, cancel: { taskId, reason: 'cancelled' } };
    }
    return { ack: { ok: true, state }, stale };
  }

  /**
   * The push of an assignment the agent did not receive, to be sent again. A push can be lost on
   * its way: the replica that claimed the agent died before emitting it, or the Redis adapter's
   * publish to the agent's replica was lost (Redis pub/sub delivers at most once). The agent,
   * connected and well, then let the ack timeout pass and rested in cooldown for it, with the
   * task waiting as long. A sidecar names the task it holds in every heartbeat, so one from the
   * connection the record names that names none, sent well after the assignment, shows the push
   * was lost. Sending it again is safe: the sidecar confirms an assignment it already runs
   * (`task:accept` again, which `accept.lua` answers as a replay) and accepts a new one only
   * through `task:accept`, fenced by the token, so a push that arrives after the assignment
   * ended is refused there. Costs a job read only then; the heartbeat script reads `assignedAt`.
   */
  private async unreceivedPush(
    presence: AgentPresence | undefined,
  ): Promise<TaskAssign | undefined> {
    if (presence?.state !== 'assigned') return undefined;
    const { taskId, token, taskQueue, assignedAt } = presence;
    if (!taskId || !token || !taskQueue || assignedAt === undefined) return undefined;
    const after = Math.min(UNRECEIVED_PUSH_AFTER_MS, this.options.ackTimeoutMs / 2);
    if (this.options.agents.now() - assignedAt < after) return undefined;
    const job = await this.options.queues.job(taskQueue, taskId);
    if (!job) return undefined;
    const task = taskFromJob(job);
    if ('problem' in task) return undefined; // never pushed: the dispatcher fails such a job
    this.options.metrics.pushesResent.inc({ queue: taskQueue });
    return assignMessage(taskQueue, token, task);
  }

  /**
   * A sidecar announces in every heartbeat the task it holds (running, or finished with its
   * report not yet acknowledged). A record `working` on a task its agent's heartbeats do not
   * name is a task nobody carries out, and the lease keeper would extend its lease for as long
   * as the agent lives: e.g. a sidecar that announced the task on a reconnect, then gave it up
   * because its accept, sent on the old connection, was never answered. Two heartbeats in a row
   * (one alone could have been sent just before the task's accept) put the task back to wait,
   * without using an attempt, and free the agent.
   */
  private reconcile(
    agentId: string,
    presence: AgentPresence | undefined,
    heldTaskId?: string,
  ): void {
    const working =
      presence?.state === 'working' && presence.taskId !== undefined && presence.token !== undefined
        ? { taskId: presence.taskId, token: presence.token, queue: presence.taskQueue ?? '' }
        : undefined;
    if (!working || heldTaskId !== undefined) {
      this.notHeld.delete(agentId);
      return;
    }
    const seen = this.notHeld.get(agentId);
    if (seen?.taskId !== working.taskId || seen.token !== working.token) {
      this.notHeld.set(agentId, { taskId: working.taskId, token: working.token });
      return;
    }
    this.notHeld.delete(agentId);
    void this.putBackNotHeld(agentId, working).catch((err: unknown) =>
      this.options.logger.warn({ agentId, err: String(err) }, 'could not put back a task not held'),
    );
  }

  private async putBackNotHeld(
    agentId: string,
    task: { taskId: string; token: string; queue: string },
  ): Promise<void> {
    this.options.logger.warn(
      { agentId, taskId: task.taskId },
      "the agent's heartbeats say it does not hold its task: putting the task back",
    );
    const job = await this.options.queues.job(task.queue, task.taskId);
    // fenced by the token: a job that moved on meanwhile stays where it is
    await job?.moveToWait(task.token).catch(() => undefined);
    await this.release(agentId, task.taskId, task.token, 'not_held');
    this.options.onAgentIdle([task.queue]);
  }

  /**
   * The lock of a task this replica extended was lost: the agent is told to stop it (first: the
   * release may claim the agent for the task's retry) and released, but only while its record
   * still holds that assignment. One that ended elsewhere meanwhile (another replica's
   * run-timeout backstop, which told the agent) may have been followed by the next assignment
   * of the same task to this agent, which a cancel now would stop; an agent still running an
   * assignment that ended learns it from its next heartbeat (`abort`).
   */
  async leaseLost(
    agentId: string,
    task: HeldTask,
    tell: (cancel: TaskCancel) => void,
  ): Promise<void> {
    if (!holds(await this.options.agents.get(agentId), task.taskId, task.token)) return;
    this.options.logger.warn(
      { agentId, taskId: task.taskId },
      'lease lost: telling the agent to abort',
    );
    tell({ taskId: task.taskId, reason: 'lease_lost', token: task.token });
    await this.release(agentId, task.taskId, task.token, 'lease_lost');
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
      if (await this.releaseRecord(record, reason, incr, cooldownUntil)) return true;
    }
    this.options.logger.warn({ agentId, taskId }, 'could not release agent after retries');
    return false;
  }

  /**
   * One compare-and-set attempt of {@link release} on the version of `record`. With
   * `claimNext`, an agent freed to `idle` is followed, in the same script, by a claim for the
   * next runnable job of the task's queue (see `transitionThenClaim.lua`).
   */
  private async releaseRecord(
    record: AgentRecord,
    reason: TransitionReason,
    incr: Record<string, number>,
    cooldownUntil: number | undefined,
    always?: TransitionRequest['always'],
    claimNext = false,
  ): Promise<boolean> {
    const { agents } = this.options;
    const now = agents.now();
    const connected = record.disconnectedAt === undefined && record.socketId !== undefined;
    const to = connected
      ? restingState({
          drainRequested: record.drainRequested,
          cooldownUntil: cooldownUntil ?? record.cooldownUntil,
          now,
        })
      : 'offline';
    const answered = record.state === 'assigned' && AGENT_REPORTS.includes(reason);
    const request: TransitionRequest = {
      agentId: record.agentId,
      from: record.state,
      to,
      version: record.version,
      reason,
      task: record.taskId,
      // a report of a task not accepted yet (a refusal) answers for it as an accept does: it
      // ends a streak of ack timeouts (a field of the same HDEL, and only when one was counted)
      del: answered && record.missedAcks > 0 ? [...TASK_FIELDS, 'missedAcks'] : TASK_FIELDS,
      incr,
      set: cooldownUntil !== undefined ? { cooldownUntil } : {},
      idleAdd: to === 'idle' ? record.queues : [],
      // leave only the indexes the record can be in (a ZREM of a non-member is a wasted
      // command; a stale entry would be dropped by the sweeper, which re-reads the record):
      // the ack deadline lasts until accept, the disconnected index while disconnectedAt is set,
      // the run deadline exists only for a task with a timeout
      index: {
        ...(record.state === 'assigned' ? { ackDeadline: 'remove' } : {}),
        ...(record.disconnectedAt !== undefined ? { disconnected: 'remove' } : {}),
        ...(record.taskTimeoutMs !== undefined ? { runDeadline: 'remove' } : {}),
        ...(to === 'cooldown' ? { cooldown: cooldownUntil ?? record.cooldownUntil ?? now } : {}),
      },
      ...(always ? { always } : {}),
    };
    const queue = record.taskQueue;
    if (claimNext && to === 'idle' && queue) {
      const { result, step } = await agents.transitionThenClaim(
        request,
        queue,
        this.options.ackTimeoutMs,
        this.options.leaseMs,
      );
      if (step) this.options.onClaimed(step);
      // the freed agent stays idle when the claim took another one, or none
      if (result.ok && step?.claim.agentId !== record.agentId) {
        this.freedBesides(record.queues, queue);
      }
      return result.ok;
    }
    const result = await agents.transition(request);
    if (result.ok && to === 'idle') this.options.onAgentIdle(record.queues);
    return result.ok;
  }

  /**
   * An agent a report freed stays idle, and its release ran the next dispatch step of
   * `claimedQueue` in the same script: the agent's other queues may have work for it, that one
   * not. A step there now would see what the script saw: no runnable job, or one another agent
   * took (its step tells with `more` whether to go on). A task added since has a step of its own.
   */
  private freedBesides(queues: readonly string[], claimedQueue: string): void {
    const others = queues.filter((queue) => queue !== claimedQueue);
    if (others.length > 0) this.options.onAgentIdle(others);
  }

  /**
   * The agent's record, when it holds `taskId` under `token` (and, with `tokenHash`, the
   * connection's token is still the agent's: {@link tokenRevoked} otherwise).
   */
  private async heldRecord(
    agentId: string,
    taskId: string,
    token: string,
    tokenHash: string | undefined,
  ): Promise<AgentRecord & { taskQueue: string }> {
    const record = await this.options.agents.get(agentId);
    if (tokenHash !== undefined && record?.tokenHash !== tokenHash) throw tokenRevoked();
    if (!holds(record, taskId, token) || !record?.taskQueue) throw superseded(taskId);
    return { ...record, taskQueue: record.taskQueue };
  }

  /**
   * The queue of the task the agent holds under `token`: known without a read when this replica
   * extends the task's lease (the script that writes checks the record anyway), otherwise read
   * from the record ({@link heldRecord}'s refusals).
   */
  private async heldQueue(
    agentId: string,
    taskId: string,
    token: string,
    tokenHash: string | undefined,
  ): Promise<string> {
    const held = this.options.leases.heldBy(agentId);
    if (held?.taskId === taskId && held.token === token) return held.queue;
    return (await this.heldRecord(agentId, taskId, token, tokenHash)).taskQueue;
  }

  /** Counts an applied report (on this replica only: each report is applied once). */
  private observe(
    record: Pick<AgentRecord, 'taskQueue' | 'startedAt'>,
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
   * duplicate). Free the agent and answer superseded. Always throws: the report lock is released
   * by {@link underReportLock}.
   */
  private async refused(
    agentId: string,
    taskId: string,
    token: string,
    err: unknown,
  ): Promise<never> {
    if (!isStaleAssignmentError(err) && !isAppError(err)) throw err;
    await this.release(agentId, taskId, token, 'lease_lost');
    throw superseded(taskId);
  }
}

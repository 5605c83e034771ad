import { UnrecoverableError } from 'bullmq';
import type { AgentStore, Claim, ClaimStep } from '../fsm/agent-store';
import type { RedisKeys } from '../redis/keys';
import type { Logger } from '../logger';
import type { HubMetrics } from '../metrics/hub-metrics';
import type { TaskStartTimes } from '../metrics/task-start-times';
import type { QueueRegistry, TaskJob } from '../queues/queue-registry';
import type { IdempotencyKeys } from '../tasks/idempotency-keys';
import { CANCELLED_PREFIX } from '../tasks/task-service';
import { TASK_FIELDS } from './assignments';
import {
  assignMessage,
  taskFromFields,
  taskFromJob,
  type AssignedTask,
  type NotATask,
} from './assign-message';
import type { AgentNotifier } from './notifier';

export interface DispatcherOptions {
  keys: RedisKeys;
  agents: AgentStore;
  queues: QueueRegistry;
  notifier: AgentNotifier;
  ackTimeoutMs: number;
  /** A fetched job's lock lasts this long (`LEASE_MS`); the lease keeper extends it. */
  leaseMs: number;
  /** Dispatch steps one replica runs at once per queue (`DISPATCH_CONCURRENCY`). */
  concurrency?: number;
  logger: Logger;
  metrics: HubMetrics;
  /** This replica's tasks' start times, finer than `job.timestamp`, for the dispatch latency. */
  starts?: TaskStartTimes;
  /** A task failed here keeps its idempotency key for a while (BullMQ's failure deletes it). */
  idempotency: IdempotencyKeys;
}

/**
 * Pushes waiting tasks to idle agents. One dispatch step is one script (`claimAndFetch.lua`),
 * then an emit:
 * 1. if a job of the queue is runnable, claim the longest-idle agent serving it (idle → assigned)
 *    with a new assignment token, and pick the first of the agent's queues with a runnable job;
 * 2. fetch that queue's next job with BullMQ's own `moveToActive`, the token as its lock;
 * 3. record the task on the agent, unless an operator asked to cancel it or BullMQ marked it to
 *    fail (those go the long way: {@link fulfil});
 * then emit `task:assign` to the agent's room.
 * Any replica may run steps for any queue at the same time: steps are atomic in Redis. Each
 * replica runs up to `concurrency` steps per queue at once.
 *
 * Triggers coalesce per queue: while a queue's steps run, further triggers only ask them to go
 * round once more.
 */
export class Dispatcher {
  private readonly running = new Map<string, number>();
  private readonly idle = new Map<string, Array<() => void>>();
  private readonly again = new Set<string>();
  /** Steps started by {@link continueClaim}, awaited by {@link stop}. */
  private readonly continuing = new Set<Promise<unknown>>();
  private stopped = false;
  private readonly concurrency: number;
  /** Tasks pushed by this replica (for metrics and tests). */
  assignedCount = 0;

  constructor(private readonly options: DispatcherOptions) {
    this.concurrency = Math.max(1, options.concurrency ?? 1);
  }

  trigger(queue: string): void {
    if (this.stopped) return;
    if ((this.running.get(queue) ?? 0) > 0) {
      this.again.add(queue);
      return;
    }
    this.again.delete(queue);
    this.startLoop(queue);
  }

  /**
   * One more step loop for the queue. A trigger starts one; each step that assigned a task adds
   * another, up to `concurrency`: an idle queue (the safety tick triggers every queue) costs one
   * claim attempt, a busy one runs `concurrency` steps at once.
   */
  private startLoop(queue: string): void {
    this.running.set(queue, (this.running.get(queue) ?? 0) + 1);
    void this.loop(queue)
      .catch((err: unknown) =>
        this.options.logger.warn({ queue, err: String(err) }, 'dispatch failed'),
      )
      .finally(() => this.loopDone(queue));
  }

  triggerAll(queues: Iterable<string>): void {
    for (const queue of queues) this.trigger(queue);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.again.clear();
    const pending = [...this.running.keys()].map(
      (queue) =>
        new Promise<void>((resolve) => {
          const waiters = this.idle.get(queue) ?? [];
          waiters.push(resolve);
          this.idle.set(queue, waiters);
        }),
    );
    await Promise.all([...pending, ...this.continuing]);
  }

  private loopDone(queue: string): void {
    const left = (this.running.get(queue) ?? 1) - 1;
    if (left > 0) {
      this.running.set(queue, left);
      return;
    }
    this.running.delete(queue);
    for (const resolve of this.idle.get(queue) ?? []) resolve();
    this.idle.delete(queue);
    if (this.again.delete(queue)) this.trigger(queue);
  }

  private async loop(queue: string): Promise<void> {
    while (!this.stopped && (await this.step(queue))) {
      // keep going while tasks get assigned, with more loops while there is room
      if ((this.running.get(queue) ?? 0) < this.concurrency) this.startLoop(queue);
    }
  }

  /**
   * One dispatch step; true when another step may assign too (this one assigned a task and,
   * when it could tell, saw more work and an idle agent left).
   */
  async step(queue: string): Promise<boolean> {
    const { agents, ackTimeoutMs, leaseMs } = this.options;
    // nothing to hand out in a queue no task was added to (an agent may name any queue)
    if (!(await this.options.queues.holdsTasks(queue))) return false;
    await this.options.queues.get(queue);
    const step = await agents.claimAndFetch(queue, ackTimeoutMs, leaseMs);
    if (!step) return false;
    return this.carryOut(step);
  }

  /**
   * The rest of a dispatch step that ran elsewhere (a report that freed an agent ran the next
   * step in the same script: `AgentStore.transitionThenClaim`, `completeAtOnce`); more steps
   * follow when it saw more work and an idle agent.
   */
  continueClaim(step: ClaimStep): void {
    // a stopping replica hands out nothing more: the job goes back to wait, the agent to idle
    const done = (this.stopped ? this.putBack(step).then(() => false) : this.carryOut(step))
      .then((more) => {
        if (more) this.trigger(step.claim.queue);
      })
      .catch((err: unknown) =>
        this.options.logger.warn({ queue: step.claim.queue, err: String(err) }, 'dispatch failed'),
      )
      .finally(() => this.continuing.delete(done));
    this.continuing.add(done);
  }

  /**
   * Pushes a recorded task, or finishes a step the script left to JS; true if another step may
   * assign too.
   */
  private async carryOut(step: ClaimStep): Promise<boolean> {
    switch (step.outcome) {
      case 'assigned': {
        const task = taskFromFields(step.job);
        if ('problem' in task) {
          // recorded on the agent with the claim: failed, and the agent freed for the next job
          await this.failNotATask(step.claim, task);
          await this.unclaim(step.claim);
          return true;
        }
        this.push(step.claim, task);
        return step.more;
      }
      case 'fetched':
        // cancelled or due to fail: handled below, then the claimed agent takes the next job
        return this.fulfil(step.claim, await this.jobOf(step.claim.queue, step.jobId));
      case 'claimed':
        await this.unclaim(step.claim);
        return false;
    }
  }

  /** A stopping replica's step: the job it fetched goes back to wait, the agent to idle. */
  private async putBack(step: ClaimStep): Promise<void> {
    const jobId = fetchedJobId(step);
    if (jobId !== undefined) {
      // fenced by the token: a job that moved on meanwhile stays where it is
      const job = await this.jobOf(step.claim.queue, jobId);
      await job?.moveToWait(step.claim.token).catch(() => undefined);
    }
    await this.unclaim(step.claim);
  }

  /**
   * Assigns a job to the claimed agent: `first` when the claim already fetched one, then the
   * next ones while they cannot be handed out (cancelled, or failed for stalling too often);
   * frees the agent when no job is left. True if assigned.
   */
  private async fulfil(claim: Claim, first?: TaskJob): Promise<boolean> {
    let job = first;
    for (;;) {
      job ??= await this.nextJob(claim.queue, claim.token);
      if (!job) break;
      if (job.deferredFailure) {
        this.options.logger.warn(
          { queue: claim.queue, taskId: job.id, reason: job.deferredFailure },
          'task failed: stalled too often',
        );
        await this.failForGood(claim, job, job.deferredFailure, 'failed');
      } else {
        const outcome = await this.assign(claim, job);
        if (outcome !== 'cancelled') return outcome === 'assigned' || outcome === 'gone';
      }
      job = undefined;
    }
    // another step took the job first: the agent goes back to idle
    await this.unclaim(claim);
    return false;
  }

  /**
   * The claimed agent goes back to idle (compare-and-set on the claim's version), in the place in
   * the longest-idle line it had: it ran nothing.
   */
  private async unclaim(claim: Claim): Promise<void> {
    await this.options.agents.transition({
      agentId: claim.agentId,
      from: 'assigned',
      to: 'idle',
      version: claim.version,
      reason: 'release',
      del: TASK_FIELDS,
      idleAdd: claim.queues,
      idleSince: claim.idleSince,
      index: { ackDeadline: 'remove' },
    });
  }

  private async jobOf(queue: string, jobId: string): Promise<TaskJob | undefined> {
    return this.options.queues.job(queue, jobId);
  }

  /**
   * The next runnable job, fetched with the claim's token as its lock. BullMQ times this fetch
   * by this machine's clock (a delayed job due by it is promoted), not Redis's as the claims do:
   * a rare path (after a job that could not be handed out), off by this machine's skew at most.
   */
  private async nextJob(queue: string, token: string): Promise<TaskJob | undefined> {
    const handle = await this.options.queues.get(queue);
    return (await handle.worker.getNextJob(token, { block: false })) as TaskJob | undefined;
  }

  /**
   * Records the task on the claimed agent and pushes it (the path of a job the claim did not
   * fetch itself). `gone`: the agent changed meanwhile (the task went straight back to wait);
   * `cancelled`: an operator cancelled the task while it was running and it came back to wait
   * (its agent vanished), so it is cancelled now and the agent may take the next job.
   */
  private async assign(claim: Claim, job: TaskJob): Promise<'assigned' | 'gone' | 'cancelled'> {
    const { agents, keys } = this.options;
    const { agentId, version, token } = claim;
    const taskId = job.id ?? '';
    const task = taskFromJob(job);
    if ('problem' in task) {
      await this.failNotATask(claim, task, job);
      return 'cancelled'; // not handed out: the claimed agent takes the next job
    }
    const now = agents.now();
    const stored = await agents.transition({
      agentId,
      from: 'assigned',
      to: 'assigned',
      version,
      expect: { token },
      reason: 'assign',
      task: taskId,
      set: {
        taskId,
        assignedAt: now,
        ...(task.data.timeoutMs !== undefined ? { taskTimeoutMs: task.data.timeoutMs } : {}),
      },
      absent: [keys.cancelRequested(job.queueName, taskId)],
      // the ack deadline was set by the claim, a few milliseconds ago
    });
    if (!stored.ok) {
      if (stored.reason === 'conflict' && stored.field === '@absent') {
        await this.failForGood(claim, job, `${CANCELLED_PREFIX}${stored.actual}`, 'cancelled');
        return 'cancelled';
      }
      // The agent went away between claim and assignment: the task goes straight back.
      await job.moveToWait(token).catch(() => undefined);
      return 'gone';
    }
    this.push(claim, task);
    return 'assigned';
  }

  /**
   * Fails, for good, a job fetched under the claim whose data is no task's (`readTaskData`): no
   * agent could run it, and handed out it came back first in line at each ack timeout, holding up
   * its queue. `job`: when the caller holds it already.
   */
  private async failNotATask(claim: Claim, task: NotATask, job?: TaskJob): Promise<void> {
    const fetched = job ?? (await this.jobOf(claim.queue, task.id));
    if (!fetched) return;
    const reason = `not a task: ${task.problem}`;
    this.options.logger.warn({ queue: claim.queue, taskId: task.id, reason }, 'task failed');
    await this.failForGood(claim, fetched, reason, 'failed');
  }

  /**
   * Fails a job fetched under the claim for good (no retry), settles its idempotency key, and
   * counts the failure: no agent reports it, so the replica that applied it does (the claim's
   * token is the job's lock: only one replica's `moveToFailed` goes through).
   */
  private async failForGood(
    claim: Claim,
    job: TaskJob,
    reason: string,
    outcome: 'failed' | 'cancelled',
  ): Promise<void> {
    await job.moveToFailed(new UnrecoverableError(reason), claim.token, false);
    await this.options.idempotency.settle(claim.queue, job.id ?? '', job.deduplicationId);
    this.options.metrics.tasksFailed.inc({ queue: claim.queue, outcome });
  }

  /** Emits `task:assign` for a task recorded on the claimed agent. */
  private push(claim: Claim, task: AssignedTask): void {
    const { agentId, token, queue, socketId } = claim;
    const message = assignMessage(queue, token, task);
    this.options.notifier.assign(agentId, message, socketId);
    this.assignedCount++;
    const sinceAddedMs = this.options.starts?.takeElapsedMs(task.id);
    // Only the first push of a task: an operator's retry resets attemptsMade and attemptsStarted
    // (BullMQ's reprocessJob), but it only retries a failed task, whose failure left its trace.
    if (task.attemptsStarted <= 1 && task.attemptsMade === 0 && !task.failedBefore) {
      // below the millisecond when this replica added the task, in whole milliseconds otherwise:
      // on Redis's clock, the one a delay's end is judged by (claims, promoteDue) and the one
      // every replica stamps its tasks with (TaskService.jobSpec)
      const latencyMs =
        sinceAddedMs ?? Math.max(0, this.options.agents.now() - (task.timestamp + task.delay));
      this.options.metrics.dispatchLatency.observe({ queue }, latencyMs / 1000);
    }
  }
}

/** The job a dispatch step fetched, if any. */
function fetchedJobId(step: ClaimStep): string | undefined {
  if (step.outcome === 'assigned') return step.job.id;
  if (step.outcome === 'fetched') return step.jobId;
  return undefined;
}

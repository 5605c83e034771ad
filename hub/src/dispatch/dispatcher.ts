import { UnrecoverableError } from 'bullmq';
import type { AgentStore, Claim } from '../fsm/agent-store';
import type { RedisKeys } from '../redis/keys';
import type { Logger } from '../logger';
import type { HubMetrics } from '../metrics/hub-metrics';
import type { QueueRegistry, TaskJob } from '../queues/queue-registry';
import { CANCELLED_PREFIX } from '../tasks/task-service';
import { TASK_FIELDS } from './assignments';
import type { AgentNotifier } from './notifier';

export interface DispatcherOptions {
  keys: RedisKeys;
  agents: AgentStore;
  queues: QueueRegistry;
  notifier: AgentNotifier;
  ackTimeoutMs: number;
  /** Dispatch steps one replica runs at once per queue (`DISPATCH_CONCURRENCY`). */
  concurrency?: number;
  logger: Logger;
  metrics: HubMetrics;
}

/**
 * Pushes waiting tasks to idle agents. One dispatch step is three round trips:
 * 1. `claimIdle` (Lua): if a job of the queue is runnable, claim the longest-idle agent serving it
 *    (idle → assigned) with a new assignment token, and pick the first of the agent's queues with
 *    a runnable job;
 * 2. fetch that queue's next job with the token as the BullMQ lock token;
 * 3. record the task on the agent (compare-and-set on the claimed version, refused when an
 *    operator asked to cancel the task meanwhile) and emit `task:assign` to the agent's room.
 * Any replica may run steps for any queue at the same time: claims and fetches are atomic in
 * Redis. Each replica runs up to `concurrency` steps per queue at once.
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

  /** One dispatch step; true when a task was assigned (there may be more). */
  async step(queue: string): Promise<boolean> {
    const { agents, ackTimeoutMs } = this.options;
    await this.options.queues.get(queue); // a queue agents serve is known (and listed) from now
    const claim = await agents.claimIdle(queue, ackTimeoutMs);
    if (!claim) return false;
    return this.fulfil(claim);
  }

  /**
   * The rest of a dispatch step for an agent claimed elsewhere (a report that freed an agent
   * claims the next one in the same script: `AgentStore.transitionThenClaim`).
   */
  continueClaim(claim: Claim): void {
    // a stopping replica fetches nothing more: the claimed agent goes back to idle at once
    const done = (this.stopped ? this.unclaim(claim).then(() => false) : this.fulfil(claim))
      .catch((err: unknown) =>
        this.options.logger.warn({ queue: claim.queue, err: String(err) }, 'dispatch failed'),
      )
      .finally(() => this.continuing.delete(done));
    this.continuing.add(done);
  }

  /** Fetches a job for the claimed agent and assigns it, or frees the agent; true if assigned. */
  private async fulfil(claim: Claim): Promise<boolean> {
    for (;;) {
      const job = await this.nextJob(claim.queue, claim.token);
      if (!job) break;
      const outcome = await this.assign(claim, job);
      if (outcome !== 'cancelled') return outcome === 'assigned' || outcome === 'gone';
    }
    // another step took the job first: the agent goes back to idle
    await this.unclaim(claim);
    return false;
  }

  /** The claimed agent goes back to idle (compare-and-set on the claim's version). */
  private async unclaim(claim: Claim): Promise<void> {
    await this.options.agents.transition({
      agentId: claim.agentId,
      from: 'assigned',
      to: 'idle',
      version: claim.version,
      reason: 'release',
      del: TASK_FIELDS,
      idleAdd: claim.queues,
      index: { ackDeadline: 'remove' },
    });
  }

  /** The next runnable job; a job that stalled too often (`deferredFailure`) is failed here. */
  private async nextJob(queue: string, token: string): Promise<TaskJob | undefined> {
    const handle = await this.options.queues.get(queue);
    for (;;) {
      const job = (await handle.worker.getNextJob(token, { block: false })) as TaskJob | undefined;
      if (!job?.deferredFailure) return job;
      this.options.logger.warn(
        { queue, taskId: job.id, reason: job.deferredFailure },
        'task failed: stalled too often',
      );
      await job.moveToFailed(new UnrecoverableError(job.deferredFailure), token, false);
    }
  }

  /**
   * Records the task on the claimed agent and pushes it. `gone`: the agent changed meanwhile
   * (the task went straight back to wait); `cancelled`: an operator cancelled the task while it
   * was running and it came back to wait (its agent vanished), so it is cancelled now and the
   * agent may take the next job.
   */
  private async assign(claim: Claim, job: TaskJob): Promise<'assigned' | 'gone' | 'cancelled'> {
    const { agents, notifier, keys } = this.options;
    const { agentId, version, token, queue } = claim;
    const taskId = job.id ?? '';
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
        ...(job.data.timeoutMs !== undefined ? { taskTimeoutMs: job.data.timeoutMs } : {}),
      },
      absent: [keys.cancelRequested(taskId)],
      // the ack deadline was set by the claim, a few milliseconds ago
    });
    if (!stored.ok) {
      if (stored.reason === 'conflict' && stored.field === '@absent') {
        const error = new UnrecoverableError(`${CANCELLED_PREFIX}${stored.actual}`);
        await job.moveToFailed(error, token, false);
        return 'cancelled';
      }
      // The agent went away between claim and assignment: the task goes straight back.
      await job.moveToWait(token).catch(() => undefined);
      return 'gone';
    }
    const attempts = job.opts.attempts ?? 1;
    notifier.assign(agentId, {
      task: {
        id: taskId,
        queue,
        payload: job.data.payload,
        ...(job.data.labels ? { labels: job.data.labels } : {}),
        createdAt: job.timestamp,
      },
      token,
      attempt: Math.min(job.attemptsMade + 1, attempts),
      attempts,
      ...(job.data.timeoutMs !== undefined ? { timeoutMs: job.data.timeoutMs } : {}),
    });
    this.assignedCount++;
    if (job.attemptsStarted <= 1 && job.attemptsMade === 0) {
      const readyAt = job.timestamp + (job.opts.delay ?? 0);
      this.options.metrics.dispatchLatency.observe({ queue }, Math.max(0, now - readyAt) / 1000);
    }
    return 'assigned';
  }
}

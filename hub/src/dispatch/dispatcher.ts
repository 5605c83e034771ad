import { UnrecoverableError } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AgentStore } from '../fsm/agent-store';
import type { RedisKeys } from '../redis/keys';
import type { Logger } from '../logger';
import type { HubMetrics } from '../metrics/hub-metrics';
import type { QueueRegistry, TaskJob } from '../queues/queue-registry';
import { CANCELLED_PREFIX } from '../tasks/task-service';
import { newAssignmentToken } from './assignment-token';
import type { AgentNotifier } from './notifier';

export interface DispatcherOptions {
  redis: Redis;
  keys: RedisKeys;
  agents: AgentStore;
  queues: QueueRegistry;
  notifier: AgentNotifier;
  ackTimeoutMs: number;
  logger: Logger;
  metrics: HubMetrics;
}

/**
 * Pushes waiting tasks to idle agents. One dispatch step claims the longest-idle agent of a queue
 * (Lua, idle → assigned), fetches the next job of the agent's queues in order with the
 * assignment token as the BullMQ lock token, records the task on the agent (compare-and-set on
 * the claimed version) and emits `task:assign` to the agent's room. Any replica may run steps
 * for any queue at the same time: claims and fetches are atomic in Redis.
 *
 * Triggers coalesce per queue: while a queue's loop runs, further triggers only ask it to go
 * round once more.
 */
export class Dispatcher {
  private readonly loops = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private stopped = false;
  /** Tasks pushed by this replica (for metrics and tests). */
  assignedCount = 0;

  constructor(private readonly options: DispatcherOptions) {}

  trigger(queue: string): void {
    if (this.stopped) return;
    if (this.loops.has(queue)) {
      this.again.add(queue);
      return;
    }
    const loop = this.loop(queue)
      .catch((err: unknown) =>
        this.options.logger.warn({ queue, err: String(err) }, 'dispatch failed'),
      )
      .finally(() => {
        this.loops.delete(queue);
        if (this.again.delete(queue)) this.trigger(queue);
      });
    this.loops.set(queue, loop);
  }

  triggerAll(queues: Iterable<string>): void {
    for (const queue of queues) this.trigger(queue);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.again.clear();
    await Promise.allSettled(this.loops.values());
  }

  private async loop(queue: string): Promise<void> {
    while (!this.stopped && (await this.step(queue))) {
      // keep going while tasks get assigned
    }
  }

  /** One dispatch step; true when a task was assigned (there may be more). */
  async step(queue: string): Promise<boolean> {
    const { agents, ackTimeoutMs } = this.options;
    if (!(await this.hasRunnableJob(queue))) return false;

    const claim = await agents.claimIdle(queue, ackTimeoutMs);
    if (!claim) return false;

    const order = claim.queues.includes(queue) ? claim.queues : [queue, ...claim.queues];
    for (const name of order) {
      const token = newAssignmentToken(claim.agentId);
      const job = await this.nextJob(name, token);
      if (job) return this.assign(claim.agentId, claim.version, name, job, token);
    }
    await agents.transition({
      agentId: claim.agentId,
      from: 'assigned',
      to: 'idle',
      version: claim.version,
      reason: 'release',
      idleAdd: claim.queues,
      index: { ackDeadline: 'remove' },
    });
    return false;
  }

  /**
   * True when a job waits, or a delayed one (a retry with backoff, a `delayMs`) is due: fetching
   * then promotes it (BullMQ promotes due delayed jobs when a job is fetched; with manual workers
   * nobody else would).
   */
  private async hasRunnableJob(queue: string): Promise<boolean> {
    const handle = await this.options.queues.get(queue);
    const counts = await handle.queue.getJobCounts('wait', 'prioritized', 'delayed');
    if ((counts.wait ?? 0) + (counts.prioritized ?? 0) > 0) return true;
    if ((counts.delayed ?? 0) === 0) return false;
    const next = await this.options.redis.zrange(
      this.options.keys.bullDelayed(queue),
      '0',
      '0',
      'WITHSCORES',
    );
    const score = Number(next[1]);
    return Number.isFinite(score) && Math.floor(score / 4096) <= this.options.agents.now();
  }

  /** The next runnable job; a job that stalled too often (`deferredFailure`) is failed here. */
  private async nextJob(queue: string, token: string): Promise<TaskJob | undefined> {
    const handle = await this.options.queues.get(queue);
    for (;;) {
      const job = (await handle.worker.getNextJob(token, { block: false })) as TaskJob | undefined;
      if (!job) return undefined;
      const cancelReason = await this.options.redis.get(
        this.options.keys.cancelRequested(job.id ?? ''),
      );
      if (cancelReason !== null) {
        // cancelled while running, then back to wait (its agent vanished): cancel it now
        const error = new UnrecoverableError(`${CANCELLED_PREFIX}${cancelReason}`);
        await job.moveToFailed(error, token, false);
        continue;
      }
      if (!job.deferredFailure) return job;
      this.options.logger.warn(
        { queue, taskId: job.id, reason: job.deferredFailure },
        'task failed: stalled too often',
      );
      await job.moveToFailed(new UnrecoverableError(job.deferredFailure), token, false);
    }
  }

  private async assign(
    agentId: string,
    version: number,
    queue: string,
    job: TaskJob,
    token: string,
  ): Promise<boolean> {
    const { agents, notifier, ackTimeoutMs } = this.options;
    const taskId = job.id ?? '';
    const now = agents.now();
    const stored = await agents.transition({
      agentId,
      from: 'assigned',
      to: 'assigned',
      version,
      reason: 'assign',
      task: taskId,
      set: {
        taskId,
        taskQueue: queue,
        token,
        assignedAt: now,
        ...(job.data.timeoutMs !== undefined ? { taskTimeoutMs: job.data.timeoutMs } : {}),
      },
      index: { ackDeadline: now + ackTimeoutMs },
    });
    if (!stored.ok) {
      // The agent went away between claim and assignment: the task goes straight back.
      await job.moveToWait(token).catch(() => undefined);
      return true;
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
    return true;
  }
}

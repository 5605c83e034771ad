import { AppError, type TaskState } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import { agentIdOfToken } from '../dispatch/assignment-token';
import type { AgentNotifier } from '../dispatch/notifier';
import type { TaskJob } from '../queues/queue-registry';
import { shownTaskData } from '../queues/task-data';
import type { RedisKeys } from '../redis/keys';
import { luaScript } from '../redis/scripts';
import { IDEMPOTENCY_TTL_MS, type IdempotencyKeys } from './idempotency-keys';
import { CANCELLED_PREFIX, type TaskService } from './task-service';

/** How long a cancel request of a running task, or the record of a removed one, is kept. */
const CANCEL_TTL_MS = 7 * 24 * 60 * 60 * 1000;

export interface CancelOutcome {
  id: string;
  state: TaskState;
  /** True when the task was running: its agent was told to stop, the outcome follows. */
  cancelRequested?: boolean;
}

/** See `cancelTask.lua`. */
type CancelTaskReply =
  | ['gone']
  | ['completed']
  | ['failed', string]
  | ['running', string | null]
  | ['removed', UnsettledReply | null]
  | ['cancelled', UnsettledReply | null];

/** The idempotency key whose settle Redis refused inside `cancelTask.lua`, and the error. */
type UnsettledReply = [idempotencyKey: string, error: string];

/**
 * Cancels a task from any replica. A waiting or delayed task is removed at once (a record of it
 * stays, so the API shows it `cancelled`, and so does its idempotency key); one that was started
 * before (a retry waiting for its backoff) is failed as `cancelled` where it waits, keeping its
 * logs and attempts, and can be retried. Either way its idempotency key names it for 24 h more
 * (`IDEMPOTENCY_TTL_MS`), as for any finished task (a settle Redis refused is run again later,
 * the cancel answered as done). A running one gets
 * `task:cancel` at its agent, wherever it is connected; the agent kills its process group and
 * reports, and the task fails as `cancelled` without retry. The request is kept, so a task that
 * comes back to wait before its agent reported (the agent vanished) is cancelled when next
 * fetched. A task that completed or failed before the cancel took effect stays so: the cancel
 * reads the job's state and acts on it in one script.
 */
export class TaskCancellation {
  private readonly script = luaScript('cancelTask');

  constructor(
    private readonly options: {
      redis: Redis;
      keys: RedisKeys;
      tasks: TaskService;
      notifier: AgentNotifier;
      /**
       * Where a settle of an idempotency key that Redis refused inside the cancel goes to be run
       * again (recorded in Redis for any replica's sweeper).
       */
      idempotency: IdempotencyKeys;
    },
  ) {}

  /** Cancels the task of `taskId` in `queue`, or in the first known queue that holds it. */
  async cancel(
    taskId: string,
    reason = 'cancelled by an operator',
    queue?: string,
  ): Promise<CancelOutcome> {
    const job = await this.options.tasks.findJob(taskId, queue);
    return job ? this.cancelJob(job, reason) : this.cancelledBefore(taskId, queue);
  }

  /**
   * Cancels the task of a loaded job by the job's state when the cancel takes effect
   * (`cancelTask.lua`), whatever it was when the job was loaded.
   */
  async cancelJob(job: TaskJob, reason: string): Promise<CancelOutcome> {
    const { redis, keys, tasks, notifier } = this.options;
    const taskId = job.id ?? '';
    const reply = await this.script.run<CancelTaskReply>(
      redis,
      [
        keys.bullJob(job.queueName, taskId),
        keys.bullRepeat(job.queueName),
        keys.cancelledTask(job.queueName, taskId),
        keys.cancelRequested(job.queueName, taskId),
      ],
      [
        taskId,
        keys.bullQueuePrefix(job.queueName),
        record(job, reason),
        reason,
        CANCEL_TTL_MS,
        `${CANCELLED_PREFIX}${reason}`,
        Date.now(),
        IDEMPOTENCY_TTL_MS,
      ],
    );
    switch (reply[0]) {
      case 'removed':
      case 'cancelled':
        await this.deferUnsettled(job.queueName, taskId, reply[1]);
        return { id: taskId, state: 'cancelled' };
      case 'gone':
        return this.cancelledBefore(taskId, job.queueName);
      case 'completed':
        throw alreadyFinished(taskId, 'completed');
      case 'failed':
        if (reply[1].startsWith(CANCELLED_PREFIX)) return { id: taskId, state: 'cancelled' };
        throw alreadyFinished(taskId, 'failed');
      case 'running': {
        const agentId = reply[1] ? agentIdOfToken(reply[1]) : undefined;
        if (agentId) notifier.cancel(agentId, { taskId, reason: 'cancelled' });
        const view = await tasks.get(taskId);
        return { id: taskId, state: view?.state ?? 'running', cancelRequested: true };
      }
    }
  }

  /**
   * The cancel is applied, but Redis refused its settle of the task's key: run again later.
   * Never throws.
   */
  private async deferUnsettled(
    queue: string,
    taskId: string,
    unsettled: UnsettledReply | null,
  ): Promise<void> {
    if (!unsettled) return;
    const [idempotencyKey, error] = unsettled;
    await this.options.idempotency.defer(queue, taskId, idempotencyKey, error);
  }

  /** A task without a job: cancelled before it ran (a repeated cancel), or no such task. */
  private async cancelledBefore(taskId: string, queue?: string): Promise<CancelOutcome> {
    if (await this.options.tasks.cancelledBeforeRun(taskId, queue)) {
      return { id: taskId, state: 'cancelled' };
    }
    throw new AppError('E_TASK_NOT_FOUND', `No task ${taskId}`);
  }
}

function alreadyFinished(taskId: string, state: 'completed' | 'failed'): AppError {
  return new AppError('E_INVALID_STATE', `Task ${taskId} is already ${state}`);
}

/** What the API shows of a task removed before it ran (`TaskService` reads it back). */
function record(job: TaskJob, reason: string): string {
  const data = shownTaskData(job.data);
  return JSON.stringify({
    id: job.id,
    queue: job.queueName,
    payload: data.payload,
    labels: data.labels,
    createdAt: job.timestamp,
    cancelledAt: Date.now(),
    reason,
    attemptsMade: job.attemptsMade,
    attempts: job.opts.attempts ?? 1,
  });
}

import { AppError, type TaskState } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import { agentIdOfToken } from '../dispatch/assignment-token';
import type { AgentNotifier } from '../dispatch/notifier';
import type { RedisKeys } from '../redis/keys';
import { CANCELLED_PREFIX, type TaskService } from './task-service';

/** How long a cancel request of a running task, or the record of a removed one, is kept. */
const CANCEL_TTL_MS = 7 * 24 * 60 * 60 * 1000;

export interface CancelOutcome {
  id: string;
  state: TaskState;
  /** True when the task was running: its agent was told to stop, the outcome follows. */
  cancelRequested?: boolean;
}

/**
 * Cancels a task from any replica. A waiting or delayed task is removed at once (a record of it
 * stays, so the API shows it `cancelled`). A running one gets `task:cancel` at its agent, wherever
 * it is connected; the agent kills its process group and reports, and the task fails as
 * `cancelled` without retry. The request is kept, so a task that comes back to wait before its
 * agent reported (the agent vanished) is cancelled when next fetched.
 */
export class TaskCancellation {
  constructor(
    private readonly options: {
      redis: Redis;
      keys: RedisKeys;
      tasks: TaskService;
      notifier: AgentNotifier;
    },
  ) {}

  async cancel(taskId: string, reason = 'cancelled by an operator'): Promise<CancelOutcome> {
    const { redis, keys, tasks, notifier } = this.options;
    const job = await tasks.findJob(taskId);
    if (!job) {
      if (await redis.exists(keys.cancelledTask(taskId))) return { id: taskId, state: 'cancelled' };
      throw new AppError('E_TASK_NOT_FOUND', `No task ${taskId}`);
    }
    const state = await job.getState();
    if (
      state === 'completed' ||
      (state === 'failed' && !job.failedReason?.startsWith(CANCELLED_PREFIX))
    ) {
      throw new AppError('E_INVALID_STATE', `Task ${taskId} is already ${state}`);
    }
    if (state === 'failed') return { id: taskId, state: 'cancelled' };
    if (state !== 'active') {
      const record = JSON.stringify({
        id: taskId,
        queue: job.queueName,
        payload: job.data.payload,
        labels: job.data.labels,
        createdAt: job.timestamp,
        cancelledAt: Date.now(),
        reason,
        attemptsMade: job.attemptsMade,
        attempts: job.opts.attempts ?? 1,
      });
      try {
        await job.remove();
        await redis.set(keys.cancelledTask(taskId), record, 'PX', CANCEL_TTL_MS);
        return { id: taskId, state: 'cancelled' };
      } catch {
        // fetched by a dispatcher meanwhile: it is active now, cancel it as a running task
      }
    }
    await redis.set(keys.cancelRequested(taskId), reason, 'PX', CANCEL_TTL_MS);
    const token = await redis.get(keys.bullLock(job.queueName, taskId));
    const agentId = token ? agentIdOfToken(token) : undefined;
    if (agentId) notifier.cancel(agentId, { taskId, reason: 'cancelled' });
    const view = await tasks.get(taskId);
    return { id: taskId, state: view?.state ?? 'running', cancelRequested: true };
  }
}

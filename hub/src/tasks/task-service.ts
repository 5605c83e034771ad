import { randomUUID } from 'node:crypto';
import {
  AppError,
  type CreateTaskInput,
  type TaskState,
  type TaskView,
  type TrimmedTask,
} from '@agentcom/shared';
import type { JobState, JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AgentStore } from '../fsm/agent-store';
import type { HubConfig } from '../config';
import type { HubMetrics } from '../metrics/hub-metrics';
import type { TaskStartTimes } from '../metrics/task-start-times';
import type { QueueRegistry, TaskJob } from '../queues/queue-registry';
import { shownTaskData } from '../queues/task-data';
import type { RedisKeys } from '../redis/keys';
import { agentIdOfToken } from '../dispatch/assignment-token';
import { UNFINISHED_IDEMPOTENCY_TTL_MS, type IdempotencyKeys } from './idempotency-keys';

/** failedReason prefix of a cancelled task: BullMQ has no cancelled state, agentcom marks it. */
export const CANCELLED_PREFIX = '[cancelled] ';

export interface TaskServiceOptions {
  redis: Redis;
  keys: RedisKeys;
  queues: QueueRegistry;
  agents: AgentStore;
  /** Called after this replica added a task (the dispatcher's fastest trigger). */
  onCreated: (queue: string) => void;
  metrics: HubMetrics;
  /** Where the dispatch latency of this replica's own tasks starts (sub-millisecond). */
  starts: TaskStartTimes;
  /** How many finished tasks BullMQ keeps, and for how long (seconds). */
  retention: HubConfig['retention'];
  /** A retried task's idempotency key names it for as long as an unfinished task's again. */
  idempotency: IdempotencyKeys;
  /**
   * Redis's clock (`RedisClock.now`), the time a new job is stamped with: its delay ends by it, as
   * the claims and `promoteDue` judge it on whichever replica, not by this machine's clock.
   */
  now: () => number;
}

export interface CreatedTask {
  id: string;
  /** A duplicate's earlier task: `removed` when it is no longer kept and its outcome unknown. */
  state: TaskState | 'removed';
  duplicate: boolean;
}

/** The BullMQ job of a new task, with the id agentcom chose for it. */
interface JobSpec {
  name: 'task';
  data: TaskJob['data'];
  opts: JobsOptions & { jobId: string };
}

/** Creates tasks as BullMQ jobs and shows them as the API's {@link TaskView}. */
export class TaskService {
  constructor(private readonly options: TaskServiceOptions) {}

  async create(input: CreateTaskInput): Promise<CreatedTask> {
    const handle = await this.options.queues.get(input.queue);
    const spec = this.jobSpec(input);
    const job = await this.timed([spec], () => handle.queue.add(spec.name, spec.data, spec.opts));
    return this.created(input, spec.opts.jobId, job.id);
  }

  /**
   * Creates many tasks with one BullMQ `addBulk` (one pipelined round trip) per queue; the
   * results are in the order of `inputs`. Not atomic: a Redis failure midway may leave some
   * created (a retry with idempotency keys creates none twice).
   */
  async createMany(inputs: readonly CreateTaskInput[]): Promise<CreatedTask[]> {
    const byQueue = new Map<string, number[]>();
    inputs.forEach((input, index) => {
      const indexes = byQueue.get(input.queue) ?? [];
      indexes.push(index);
      byQueue.set(input.queue, indexes);
    });
    const results: CreatedTask[] = [];
    await Promise.all(
      [...byQueue].map(async ([queue, indexes]) => {
        const handle = await this.options.queues.get(queue);
        const specs = indexes.map((index) => this.jobSpec(inputs[index]!));
        const jobs = await this.timed(specs, () => handle.queue.addBulk(specs));
        await Promise.all(
          indexes.map(async (index, k) => {
            results[index] = await this.created(inputs[index]!, specs[k]!.opts.jobId, jobs[k]?.id);
          }),
        );
      }),
    );
    return results;
  }

  /**
   * Adds jobs with their dispatch latency timed from now, the same way for one task or a batch
   * (BullMQ's `waiting` event, which `addBulk` does not emit, left batches in whole
   * milliseconds). Delayed tasks are not: they are timed from when they are due, in whole
   * milliseconds (`job.timestamp + delay`, on Redis's clock). The starts of a failed add are
   * dropped (a batch may have created some of its tasks: those are then timed in whole
   * milliseconds); {@link created} drops a duplicate's.
   */
  private async timed<T>(specs: readonly JobSpec[], add: () => Promise<T>): Promise<T> {
    const { starts } = this.options;
    const timed = specs.filter((spec) => !spec.opts.delay).map((spec) => spec.opts.jobId);
    for (const id of timed) starts.start(id);
    try {
      return await add();
    } catch (err) {
      for (const id of timed) starts.forget(id);
      throw err;
    }
  }

  /**
   * The BullMQ job of a new task: a fresh uuid as its id, the task's options as job options,
   * stamped on Redis's clock. BullMQ's default stamp is this machine's `Date.now()`, and a delayed
   * job is due at stamp + delay: a replica 20 s ahead of Redis added tasks that started 20 s late,
   * one behind tasks that started up to 20 s early. The stamp is also the task's `createdAt`.
   */
  private jobSpec(input: CreateTaskInput): JobSpec {
    const data: TaskJob['data'] = { payload: input.payload };
    if (input.labels) data.labels = input.labels;
    if (input.timeoutMs !== undefined) data.timeoutMs = input.timeoutMs;
    return {
      name: 'task',
      data,
      opts: {
        jobId: randomUUID(),
        timestamp: this.options.now(),
        attempts: input.attempts,
        removeOnComplete: this.options.retention.completed,
        removeOnFail: this.options.retention.failed,
        ...(input.priority ? { priority: input.priority } : {}),
        ...(input.delayMs ? { delay: input.delayMs } : {}),
        ...(input.backoff
          ? { backoff: { type: input.backoff.type, delay: input.backoff.delayMs } }
          : {}),
        // the key names the task for longer than any task waits (a TTL of 24 h from the due time
        // ran out under a task that still waited, and a repeat created it again), and outlives
        // its end by 24 h (`IdempotencyKeys`)
        ...(input.idempotencyKey
          ? { deduplication: { id: input.idempotencyKey, ttl: UNFINISHED_IDEMPOTENCY_TTL_MS } }
          : {}),
      },
    };
  }

  /** What `add` did: BullMQ answers another id when the idempotency key names an earlier task. */
  private async created(
    input: CreateTaskInput,
    jobId: string,
    addedId: string | undefined,
  ): Promise<CreatedTask> {
    const id = addedId ?? jobId;
    if (id !== jobId) {
      this.options.starts.forget(jobId); // no job was built under this id
      const existing = await this.get(id, input.queue);
      const state = existing?.state ?? (await this.outcomeOfRemoved(id, [input.queue]));
      return { id, state, duplicate: true };
    }
    this.options.metrics.tasksCreated.inc({ queue: input.queue });
    this.options.onCreated(input.queue);
    return { id, state: input.delayMs ? 'delayed' : 'waiting', duplicate: false };
  }

  /**
   * Where to look a task up: the queue the caller names, else every known queue. A task id is
   * unique in its queue only: the API's own are UUIDs, but a BullMQ producer's own ids (1, 2, ...)
   * count per queue, so an id without its queue names the first queue found that holds it.
   */
  private async queuesOf(queue: string | undefined): Promise<string[]> {
    return queue === undefined ? this.options.redis.smembers(this.options.keys.queues) : [queue];
  }

  /**
   * Finds the job of a task id in `queue`, or among the known queues (one pipelined round trip
   * after reading them).
   */
  async findJob(taskId: string, queue?: string): Promise<TaskJob | undefined> {
    return this.findJobIn(taskId, await this.queuesOf(queue));
  }

  private async findJobIn(taskId: string, names: string[]): Promise<TaskJob | undefined> {
    const { redis, keys, queues } = this.options;
    if (names.length === 0) return undefined;
    const pipeline = redis.pipeline();
    // only job hashes have `timestamp` (ids like `meta` or `wait` name BullMQ's own keys)
    for (const name of names) pipeline.hexists(keys.bullJob(name, taskId), 'timestamp');
    const replies = (await pipeline.exec()) ?? [];
    const index = replies.findIndex(([err, exists]) => !err && exists === 1);
    const name = names[index];
    if (name === undefined) return undefined;
    return queues.job(name, taskId);
  }

  /** The task of `taskId` in `queue`, or in the first known queue that holds it. */
  async get(taskId: string, queue?: string): Promise<TaskView | undefined> {
    return this.viewIn(taskId, await this.queuesOf(queue));
  }

  private async viewIn(taskId: string, queues: string[]): Promise<TaskView | undefined> {
    const job = await this.findJobIn(taskId, queues);
    const view = job && (await this.view(job));
    return view ?? this.cancelledView(taskId, queues);
  }

  /**
   * The state of a task no longer kept, from its finished marker: an idempotency key outlives
   * the task when retention trims it (the marker lives as long as the key, 24 h, and is written
   * later; a report's intent, `completing`/`failing`, counts as its outcome: a task retention
   * trimmed was not put back to run). A failure with a cancel request on record was the
   * cancellation of a running task.
   * `removed` without a marker: the task ended without a report of its agent (failed for
   * stalling too often, for instance). (A task cancelled while it waits keeps its idempotency
   * key, and {@link get} shows it from its record; removing it from Bull Board frees the key.)
   */
  private async outcomeOfRemoved(
    taskId: string,
    queues: string[],
  ): Promise<TrimmedTask['state'] | 'removed'> {
    const { redis, keys } = this.options;
    const [marker, ...cancelRequests] = await redis.mget(
      keys.finished(taskId),
      ...queues.map((queue) => keys.cancelRequested(queue, taskId)),
    );
    const outcome = marker?.split(' ', 1)[0];
    if (outcome === 'completed' || outcome === 'completing') return 'completed';
    if (outcome === 'failed' || outcome === 'failing') {
      return cancelRequests.every((request) => request === null) ? 'failed' : 'cancelled';
    }
    return 'removed';
  }

  /** A task of `queue` (or of the first known queue with one) cancelled before it ran. */
  async cancelledBeforeRun(taskId: string, queue?: string): Promise<TaskView | undefined> {
    return this.cancelledView(taskId, await this.queuesOf(queue));
  }

  /**
   * A task cancelled while waiting or delayed: its job is gone, its record (in the first of
   * `queues` that has one) says what it was.
   */
  private async cancelledView(taskId: string, queues: string[]): Promise<TaskView | undefined> {
    if (queues.length === 0) return undefined;
    const { redis, keys } = this.options;
    const records = await redis.mget(...queues.map((queue) => keys.cancelledTask(queue, taskId)));
    const raw = records.find((record) => record !== null);
    if (!raw) return undefined;
    const record = JSON.parse(raw) as {
      queue: string;
      payload: unknown;
      labels?: Record<string, string>;
      createdAt: number;
      cancelledAt: number;
      reason: string;
      attemptsMade: number;
      attempts: number;
    };
    return {
      id: taskId,
      queue: record.queue,
      state: 'cancelled',
      payload: record.payload,
      priority: 0,
      attempts: record.attempts,
      attempt: record.attemptsMade,
      attemptsMade: record.attemptsMade,
      ...(record.labels ? { labels: record.labels } : {}),
      error: record.reason,
      createdAt: record.createdAt,
      finishedAt: record.cancelledAt,
    };
  }

  /**
   * The task; one no longer kept whose outcome is recorded (retention trimmed it after it
   * finished, as {@link outcomeOfRemoved} reads it for a repeated idempotency key): 410
   * `E_TASK_TRIMMED` with its outcome as `details` ({@link TrimmedTask}), so that a client polling
   * it learns how it ended; 404 `E_TASK_NOT_FOUND` when nothing of it is known.
   */
  async getOrThrow(taskId: string, queue?: string): Promise<TaskView> {
    const names = await this.queuesOf(queue);
    const view = await this.viewIn(taskId, names);
    if (view) return view;
    const outcome = await this.outcomeOfRemoved(taskId, names);
    if (outcome === 'removed') throw new AppError('E_TASK_NOT_FOUND', `No task ${taskId}`);
    const details: TrimmedTask = { id: taskId, state: outcome };
    throw new AppError(
      'E_TASK_TRIMMED',
      `Task ${taskId} ${outcome}; retention no longer keeps it, its outcome only is known`,
      { details },
    );
  }

  /** Runs a failed or cancelled task again (a fresh set of attempts). */
  async retry(taskId: string, queue?: string): Promise<CreatedTask> {
    const names = await this.queuesOf(queue);
    const job = await this.findJobIn(taskId, names);
    if (!job) {
      if (await this.cancelledView(taskId, names)) {
        throw new AppError(
          'E_INVALID_STATE',
          `Task ${taskId} was cancelled before it ran; create a new task (with another idempotency key)`,
        );
      }
      throw new AppError('E_TASK_NOT_FOUND', `No task ${taskId}`);
    }
    await this.refuseUnlessFailed(job);
    const { redis, keys } = this.options;
    await redis.del(keys.cancelRequested(job.queueName, taskId));
    // a fresh set of attempts has a fresh count of stalls too (BullMQ's reprocessJob resets the
    // attempts, not `stc`: a task that had stalled failed again at its first stall); set while
    // the job is failed, where no stalled checker counts it
    await redis.hdel(keys.bullJob(job.queueName, taskId), 'stc');
    try {
      await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    } catch (err) {
      // another retry (or retention) changed the job since it was read: answer as if it came first
      const now = await this.findJobIn(taskId, [job.queueName]);
      if (!now) throw new AppError('E_TASK_NOT_FOUND', `No task ${taskId}`);
      await this.refuseUnlessFailed(now);
      throw err;
    }
    // not finished again: its idempotency key, set to expire when it ended, names it for as long
    await this.options.idempotency.settle(job.queueName, taskId, job.deduplicationId);
    this.options.onCreated(job.queueName);
    return { id: taskId, state: 'waiting', duplicate: false };
  }

  private async refuseUnlessFailed(job: TaskJob): Promise<void> {
    const state = await job.getState();
    if (state === 'unknown') throw new AppError('E_TASK_NOT_FOUND', `No task ${job.id ?? ''}`);
    if (state !== 'failed') {
      throw new AppError(
        'E_INVALID_STATE',
        `Task ${job.id ?? ''} is ${mapJobState(state, job.failedReason)}; only failed or cancelled tasks can be retried`,
      );
    }
  }

  /** The task's log lines (BullMQ job log, also shown by Bull Board). */
  async logs(
    taskId: string,
    start: number,
    limit: number,
    queue?: string,
  ): Promise<{ logs: string[]; count: number }> {
    const names = await this.queuesOf(queue);
    const job = await this.findJobIn(taskId, names);
    if (!job) {
      // cancelled before it ran: shown, without a line
      if (await this.cancelledView(taskId, names)) return { logs: [], count: 0 };
      throw new AppError('E_TASK_NOT_FOUND', `No task ${taskId}`);
    }
    const handle = await this.options.queues.get(job.queueName);
    return handle.queue.getJobLogs(taskId, start, start + limit - 1, true);
  }

  /** The task of a loaded job; undefined when the job is gone by now (trimmed, removed). */
  async view(loaded: TaskJob): Promise<TaskView | undefined> {
    let job = loaded;
    const jobState = await job.getState();
    if (jobState === 'unknown') return undefined;
    if ((jobState === 'completed' || jobState === 'failed') && !job.finishedOn) {
      // it finished between loading its hash and reading its state: load the finished hash
      job = (await this.options.queues.job(job.queueName, job.id ?? '')) ?? job;
    }
    let state = mapJobState(jobState, job.failedReason);
    let agentId: string | undefined;
    if (jobState === 'active') {
      const token = await this.options.redis.get(
        this.options.keys.bullLock(job.queueName, job.id ?? ''),
      );
      // The hash was loaded before the state and the lock were read: a job that went back to
      // wait and was fetched again meanwhile (a stalled task run elsewhere) would show its new
      // holder with the old attempt. The fetch that took this lock also counted its attempt, so
      // the hash read now matches the holder.
      job = (await this.options.queues.job(job.queueName, job.id ?? '')) ?? job;
      agentId = token ? agentIdOfToken(token) : undefined;
      if (agentId) {
        const agent = await this.options.agents.get(agentId);
        state = agent?.state === 'assigned' && agent.taskId === job.id ? 'assigned' : 'running';
      }
    } else if (jobState === 'completed' || jobState === 'failed') {
      // The finished record holds "<outcome> <token>", and a token starts with its agent's id.
      const finished = await this.options.redis.get(this.options.keys.finished(job.id ?? ''));
      const token = finished?.split(' ', 2)[1];
      agentId = token ? agentIdOfToken(token) : undefined;
    }
    const data = shownTaskData(job.data);
    const view: TaskView = {
      id: job.id ?? '',
      queue: job.queueName,
      state,
      payload: data.payload,
      priority: job.opts.priority ?? 0,
      attempts: job.opts.attempts ?? 1,
      attempt: attemptOf(job, jobState === 'completed' || jobState === 'failed'),
      attemptsMade: job.attemptsMade,
      createdAt: job.timestamp,
    };
    if (data.timeoutMs !== undefined) view.timeoutMs = data.timeoutMs;
    if (data.labels) view.labels = data.labels;
    if (agentId) view.agentId = agentId;
    if (job.progress !== undefined && job.progress !== 0) view.progress = job.progress;
    if (state === 'completed') view.result = job.returnvalue;
    // the last failure, also while a retry waits or runs
    if (job.failedReason && state !== 'completed') {
      view.error = job.failedReason.startsWith(CANCELLED_PREFIX)
        ? job.failedReason.slice(CANCELLED_PREFIX.length)
        : job.failedReason;
    }
    if (job.processedOn) view.startedAt = job.processedOn;
    if (job.finishedOn) view.finishedAt = job.finishedOn;
    return view;
  }
}

/**
 * The attempt a task is on (or ended on) as `task:assign` numbers it: 0 before its first start.
 * BullMQ counts a start in `attemptsStarted` each time the job is fetched, also when it then went
 * back to wait without using an attempt (an ack timeout, a rate limit, a task its agent did not
 * hold); `attemptsMade` counts the attempts used (the last one included once the job finished),
 * so an unfinished job is on at most one more.
 */
export function attemptOf(
  job: { attemptsStarted: number; attemptsMade: number; opts: { attempts?: number } },
  finished: boolean,
): number {
  const used = job.attemptsMade + (finished ? 0 : 1);
  return Math.min(job.attemptsStarted, used, job.opts.attempts ?? 1);
}

export function mapJobState(
  state: JobState | 'unknown',
  failedReason: string | undefined,
): TaskState {
  switch (state) {
    case 'delayed':
      return 'delayed';
    case 'active':
      return 'running';
    case 'completed':
      return 'completed';
    case 'failed':
      return failedReason?.startsWith(CANCELLED_PREFIX) ? 'cancelled' : 'failed';
    default:
      return 'waiting';
  }
}

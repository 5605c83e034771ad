import { Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import type { BullCountedKey, RedisKeys } from '../redis/keys';
import { pipelineReply } from '../redis/pipeline-reply';

/** What a task's BullMQ job carries. */
export interface TaskData {
  payload: unknown;
  labels?: Record<string, string>;
  timeoutMs?: number;
}
export type TaskJob = Job<TaskData, unknown, string>;

/** The BullMQ objects of one queue on this replica. */
export interface QueueHandle {
  readonly name: string;
  readonly queue: Queue<TaskData, unknown, string>;
  /** Manual worker (`autorun: false`): fetches jobs for agents, runs the stalled checker. */
  readonly worker: Worker<TaskData, unknown, string>;
}

export interface QueueRegistryOptions {
  connection: Redis;
  keys: RedisKeys;
  leaseMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
  logger: Logger;
  /** Called when this replica's stalled checker moved jobs of the queue back to wait. */
  onWaiting: (queue: string) => void;
}

/**
 * The job states `GET /v1/queues` counts, each with the BullMQ key that holds its jobs: a list
 * for `wait` and `active`, a sorted set for the others (as BullMQ's `getCounts` script reads them).
 */
const COUNTED_STATES = {
  waiting: 'wait',
  prioritized: 'prioritized',
  delayed: 'delayed',
  active: 'active',
  completed: 'completed',
  failed: 'failed',
} as const satisfies Record<string, BullCountedKey>;
export type CountedState = keyof typeof COUNTED_STATES;
export type JobCounts = Record<CountedState, number>;

/** The names `GET /v1/queues` lists, by why it lists them. */
export interface ListedQueueNames {
  /** Queues tasks were added to. */
  withTasks: string[];
  /** Queues a connected agent serves or served. */
  served: string[];
}

/**
 * Most queue names {@link QueueRegistry.serve} keeps (the most recently served): a queue that
 * holds tasks is listed whatever this bound, so it bounds only the listing of queues agents serve
 * that never had a task.
 */
export const MAX_SERVED_QUEUES = 1000;

/** Most due delayed jobs of one queue {@link QueueRegistry.promoteDue} moves per call. */
const MAX_PROMOTED_PER_QUEUE = 1000;

/** Most names {@link QueueRegistry.holdsTasks} remembers as empty between two discoveries. */
const MAX_EMPTY_NAMES = 10_000;

/**
 * One Queue + one manual Worker per queue name per replica, created on first use, never one per
 * agent: Redis connections grow with queues, not agents. Queue names are recorded in Redis so
 * every replica learns every queue.
 *
 * No QueueEvents: following BullMQ's event stream costs every replica a blocking read per few
 * events (issue 7's profile). Dispatch is triggered where a job becomes waiting on this replica
 * (created, retried, requeued, stalled) or an agent becomes idle, and by the safety tick of every
 * sweep, which also picks up jobs added straight to BullMQ by other producers and due delayed
 * jobs.
 */
export class QueueRegistry {
  private readonly handles = new Map<string, Promise<QueueHandle>>();
  /** Names found to hold no task, until the next {@link discover}. */
  private readonly empty = new Set<string>();
  private closed = false;

  constructor(private readonly options: QueueRegistryOptions) {}

  names(): string[] {
    return [...this.handles.keys()];
  }

  /** The handle of `name`, creating the BullMQ objects on first use. */
  get(name: string): Promise<QueueHandle> {
    const existing = this.handles.get(name);
    if (existing) return existing;
    if (this.closed) return Promise.reject(new Error('queue registry is closed'));
    const created = this.create(name);
    this.handles.set(name, created);
    created.catch(() => this.handles.delete(name));
    return created;
  }

  /** The job `id` of queue `name` as BullMQ holds it now, or undefined when there is none. */
  async job(name: string, id: string): Promise<TaskJob | undefined> {
    const { queue } = await this.get(name);
    return (await queue.getJob(id)) ?? undefined;
  }

  /**
   * Whether `name` is a queue tasks were added to: recorded by a replica, or holding BullMQ's
   * keys (a producer that adds jobs straight to BullMQ). Only then does dispatch open it: an
   * agent names the queues it serves itself, and a made-up name must not cost every replica a
   * Queue, a Worker with its Redis connection and a stalled checker for good (nor the metrics a
   * series). A name found empty is not asked again until the next {@link discover}.
   */
  async holdsTasks(name: string): Promise<boolean> {
    if (this.handles.has(name)) return true;
    if (this.empty.has(name)) return false;
    const { connection, keys } = this.options;
    const [[, recorded], [, created]] = (await connection
      .pipeline()
      .sismember(keys.queues, name)
      .exists(keys.bullMeta(name))
      .exec()) as [[Error | null, number], [Error | null, number]];
    if (recorded === 1 || created === 1) return true;
    if (this.empty.size >= MAX_EMPTY_NAMES) this.empty.clear();
    this.empty.add(name);
    return false;
  }

  /**
   * Records that an agent serves `names` ({@link RedisKeys.servedQueues}) at `now` (Redis's
   * clock); called as its connection is recorded, so that `GET /v1/queues` lists a queue while an
   * agent serving it is connected without reading agent records. Opens nothing (see
   * {@link holdsTasks}); a name stays recorded after its last agent went away, until
   * {@link MAX_SERVED_QUEUES} names served more recently push it out: an agent names its queues
   * itself, and one reconnecting with made-up names would otherwise grow the set, and the cost of
   * every `GET /v1/queues`, without end.
   */
  async serve(names: readonly string[], now: number): Promise<void> {
    if (names.length === 0) return;
    const { connection, keys } = this.options;
    // two plain commands (one write), not a MULTI: an ioredis pipeline on this connection copies
    // each of BullMQ's ~65 scripts defined on it (~10 KB of garbage a connect, promoted in a burst
    // of connects: +8-10 KB of heap per idle agent); a trim after another replica's ZADD still
    // leaves the newest names
    await Promise.all([
      connection.zadd(keys.servedQueues, ...names.flatMap((name) => [now, name])),
      connection.zremrangebyrank(keys.servedQueues, 0, -(MAX_SERVED_QUEUES + 1)),
    ]);
  }

  /**
   * Whether any replica has recorded a served queue. Not yet with a Redis written by a version
   * before {@link serve}: the agents connected then are recorded from their records once.
   */
  async servedRecorded(): Promise<boolean> {
    return (await this.options.connection.exists(this.options.keys.servedQueues)) === 1;
  }

  /**
   * What `GET /v1/queues` lists, in one round trip: the queues tasks were added to (and those
   * open here, recorded or not: see {@link discover}) and the queues agents serve or served.
   * Opens nothing.
   */
  async listedNames(): Promise<ListedQueueNames> {
    const { connection, keys } = this.options;
    const replies = await connection
      .pipeline()
      .smembers(keys.queues)
      .zrange(keys.servedQueues, '0', '-1')
      .exec();
    const recorded = pipelineReply<string[]>(replies, 0) ?? [];
    return {
      withTasks: [...new Set([...recorded, ...this.names()])],
      served: pipelineReply<string[]>(replies, 1) ?? [],
    };
  }

  /**
   * The job counts of each of `names` by state, as BullMQ's `getJobCounts` gives them, read in
   * one round trip for all of them (`LLEN` or `ZCARD` per state, pipelined) without opening the
   * queues: a name without jobs counts zeros. BullMQ's script also drops a marker job left at the
   * end of `wait` by BullMQ before version 5; this hub's BullMQ writes none.
   */
  async jobCounts(names: readonly string[]): Promise<JobCounts[]> {
    if (names.length === 0) return [];
    const { connection, keys } = this.options;
    const states = Object.entries(COUNTED_STATES) as Array<[CountedState, BullCountedKey]>;
    const reads = connection.pipeline();
    for (const name of names) {
      for (const [, key] of states) {
        if (key === 'wait' || key === 'active') reads.llen(keys.bullState(name, key));
        else reads.zcard(keys.bullState(name, key));
      }
    }
    const replies = await reads.exec();
    return names.map(
      (_, n) =>
        Object.fromEntries(
          states.map(([state], s) => [
            state,
            pipelineReply<number>(replies, n * states.length + s) ?? 0,
          ]),
        ) as JobCounts,
    );
  }

  /**
   * Loads the queue names every replica has recorded and opens the missing ones. Names this
   * replica has open that the set lacks are recorded again: a name is recorded when its queue is
   * first opened, so after Redis lost its data (restarted empty, failed over, flushed) a queue
   * kept open here would otherwise stay unknown to the other replicas, `GET /v1/queues` and task
   * look-ups (they read the set) for good. Costs nothing more while the set is whole.
   */
  async discover(): Promise<string[]> {
    this.empty.clear();
    const { connection, keys } = this.options;
    const names = await connection.smembers(keys.queues);
    const recorded = new Set(names);
    const lost = this.names().filter((name) => !recorded.has(name));
    if (lost.length > 0 && !this.closed) {
      await connection.sadd(keys.queues, ...lost);
      names.push(...lost);
    }
    await Promise.all(names.map((name) => this.get(name)));
    return names;
  }

  /**
   * Moves delayed jobs of the open queues that are due now to wait (at most
   * {@link MAX_PROMOTED_PER_QUEUE} per queue and call). BullMQ promotes due jobs only when a job
   * is fetched, and dispatch fetches only for an idle agent: while every agent was busy, a task
   * already due stayed `delayed` in the API, the queue counts and Bull Board, and out of the
   * `waiting` backlog. One `ZRANGEBYSCORE` per open queue, all in one round trip; the due jobs
   * are promoted together (pipelined), each by BullMQ's own `promote`, atomic against a fetch or
   * another replica that promotes it first (that one is refused, and skipped here).
   */
  async promoteDue(now: number = Date.now()): Promise<void> {
    const { connection, keys } = this.options;
    const names = this.names();
    if (names.length === 0 || this.closed) return;
    // every open queue's due ids in one round trip; BullMQ's own bound for "due": every score
    // below (now + 1) * 0x1000
    const reads = connection.pipeline();
    for (const name of names) {
      reads.zrangebyscore(
        keys.bullDelayed(name),
        0,
        (now + 1) * 0x1000 - 1,
        'LIMIT',
        0,
        MAX_PROMOTED_PER_QUEUE,
      );
    }
    const replies = (await reads.exec()) ?? [];
    await Promise.all(
      replies.flatMap(([err, due], i) =>
        err || !Array.isArray(due)
          ? []
          : (due as string[]).map(async (id) =>
              (await this.job(names[i] ?? '', id))?.promote().catch(() => undefined),
            ),
      ),
    );
  }

  private async create(name: string): Promise<QueueHandle> {
    const { connection, keys, leaseMs, stalledIntervalMs, maxStalledCount, logger } = this.options;
    await connection.sadd(keys.queues, name);
    const prefix = keys.bullPrefix;
    const queue = new Queue<TaskData, unknown, string>(name, { connection, prefix });
    const worker = new Worker<TaskData, unknown, string>(name, null, {
      connection,
      prefix,
      autorun: false,
      lockDuration: leaseMs,
      stalledInterval: stalledIntervalMs,
      maxStalledCount,
    });
    const onError = (err: Error): void => {
      logger.warn({ queue: name, err: err.message }, 'bullmq error');
    };
    queue.on('error', onError);
    worker.on('error', onError);
    worker.on('stalled', (jobId: string) => {
      logger.info({ queue: name, taskId: jobId }, 'task stalled, back to wait');
      this.options.onWaiting(name);
    });
    await Promise.all([queue.waitUntilReady(), worker.waitUntilReady()]);
    void worker
      .startStalledCheckTimer()
      .catch((err: unknown) =>
        logger.warn({ queue: name, err: String(err) }, 'stalled checker failed to start'),
      );
    return { name, queue, worker };
  }

  async close(): Promise<void> {
    this.closed = true;
    const handles = await Promise.allSettled(this.handles.values());
    for (const settled of handles) {
      if (settled.status !== 'fulfilled') continue;
      const { worker, queue } = settled.value;
      await worker.close(true).catch(() => undefined);
      await queue.close().catch(() => undefined);
    }
    this.handles.clear();
  }
}

/** The keys of a queue's jobs by state that {@link RedisKeys.bullState} names. */
export type BullCountedKey = 'wait' | 'active' | 'prioritized' | 'delayed' | 'completed' | 'failed';

/**
 * The one place that builds agentcom's Redis key names (BullMQ builds its own under
 * {@link RedisKeys.bullPrefix}). Every key, BullMQ's included, carries the hash tag `{<prefix>}`,
 * so all of them fall in one Redis Cluster slot and each Lua script's keys are co-located.
 * docs/redis-keys.md lists each key with its type, TTL and owner.
 */
export class RedisKeys {
  /** `{agentcom}`: hash-tagged root of every agentcom key. */
  readonly root: string;
  /** BullMQ's `prefix` option: BullMQ keys are `<bullPrefix>:<queue>:...`. */
  readonly bullPrefix: string;

  constructor(prefix: string) {
    this.root = `{${prefix}}`;
    // under the same hash tag: the scripts that read BullMQ's keys (claimIdle, findJobByLock)
    // then touch one slot only, and BullMQ's own scripts too (a queue's keys share the tag)
    this.bullPrefix = `${this.root}:bull`;
  }

  /** Hash: one agent's record (state machine, token hash, counters). */
  agent(agentId: string): string {
    return `${this.root}:agent:${agentId}`;
  }

  /** Prefix of {@link agent}, for Lua scripts that find agents by id. */
  get agentPrefix(): string {
    return `${this.root}:agent:`;
  }

  /** Set: every registered agent id. */
  get agents(): string {
    return `${this.root}:agents`;
  }

  /**
   * Sorted set: every registered agent id, each scored 0 so that it ranges by id (ZRANGEBYLEX):
   * the pages of `GET /v1/agents`. Mirrors {@link agents} (fsm/agent-id-index.ts).
   */
  get agentsById(): string {
    return `${this.root}:agents-by-id`;
  }

  /** Sorted set: idle agents serving `queue`, scored by idle-since (ms). */
  idle(queue: string): string {
    return `${this.root}:idle:${queue}`;
  }

  /** Prefix of {@link idle}, for Lua scripts. */
  get idlePrefix(): string {
    return `${this.root}:idle:`;
  }

  /** Sorted set: agents in `assigned`, scored by the time their ack is due. */
  get ackDeadlines(): string {
    return `${this.root}:ack-deadlines`;
  }

  /** Sorted set: working agents without a connection, scored by when they disconnected. */
  get disconnected(): string {
    return `${this.root}:disconnected`;
  }

  /** Sorted set: agents in `cooldown`, scored by the time it ends. */
  get cooldowns(): string {
    return `${this.root}:cooldowns`;
  }

  /** Sorted set: working agents whose task has a run timeout, scored by when it is due. */
  get runDeadlines(): string {
    return `${this.root}:run-deadlines`;
  }

  /**
   * String (TTL): an operator asked to cancel this running task of `queue`; value = reason.
   * Named by the queue too: a job id is unique in its queue only (BullMQ's own ids, 1, 2, ...,
   * count per queue), and a cancel asked of one queue's job `7` cancelled another queue's job `7`
   * too. Neither a queue name nor a job id may hold `:` (BullMQ refuses both), so the name is
   * unambiguous.
   */
  cancelRequested(queue: string, taskId: string): string {
    return `${this.cancelRequestedPrefix}${queue}:${taskId}`;
  }

  /**
   * `cancelRequested(queue, id)` = this + queue + `:` + id, for Lua scripts that look the key up
   * by the task's queue and id.
   */
  get cancelRequestedPrefix(): string {
    return `${this.root}:cancel-requested:`;
  }

  /**
   * String (TTL): JSON of a task of `queue` cancelled while waiting or delayed (its job was
   * removed). Named by the queue too, as {@link cancelRequested} is.
   */
  cancelledTask(queue: string, taskId: string): string {
    return `${this.root}:cancelled:${queue}:${taskId}`;
  }

  /** String (TTL 30 s): held while one report (complete/fail) of the task is being applied. */
  reporting(taskId: string): string {
    return `${this.root}:reporting:${taskId}`;
  }

  /**
   * String (TTL 10 min, refreshed on use; JSON: minting replica and time): a live agents page
   * session, by its token's HMAC-SHA-256 keyed with the admin key.
   */
  uiSession(tokenMac: string): string {
    return `${this.root}:ui-session:${tokenMac}`;
  }

  /** Counter (TTL 60 s): failed sidecar handshakes from one client address. */
  authFailures(address: string): string {
    return `${this.root}:auth-fail:${address}`;
  }

  /** String (TTL 30 s): the replica that exports the cluster-wide gauges. */
  get metricsLeader(): string {
    return `${this.root}:metrics-leader`;
  }

  /** Stream: agent transitions (capped). */
  get events(): string {
    return `${this.root}:events`;
  }

  /** Sorted set: hub replicas, scored by their last liveness refresh. */
  get replicas(): string {
    return `${this.root}:replicas`;
  }

  /** Set: every queue name tasks were added to (recorded as a replica first opens the queue). */
  get queues(): string {
    return `${this.root}:queues`;
  }

  /**
   * Sorted set: the queue names connected agents serve or served (written as a connection is
   * recorded), scored by when last (Redis's clock), the latest `MAX_SERVED_QUEUES` only, so that
   * `GET /v1/queues` lists them without reading agent records.
   */
  get servedQueues(): string {
    return `${this.root}:served-queues`;
  }

  /** String (TTL): the token that finished a task and the outcome, for idempotent replays. */
  finished(taskId: string): string {
    return `${this.root}:finished:${taskId}`;
  }

  /**
   * Sorted set: settles of idempotency keys that Redis refused, recorded for any replica's
   * sweeper to run again (`RecordedSettles`), scored by when each is due (ms); at most 10,000.
   * Each member is JSON: `[queue, taskId, idempotencyKey, first failure (ms)]`.
   */
  get deferredSettles(): string {
    return `${this.root}:deferred-settles`;
  }

  /** Channel prefix of the Socket.IO Redis adapter. */
  get socketIoChannel(): string {
    return `${this.root}:socket.io`;
  }

  /** `<bullPrefix>:`, for Lua scripts that build a queue's BullMQ key names from it. */
  get bullRoot(): string {
    return `${this.bullPrefix}:`;
  }

  /** Prefix of BullMQ's keys of one queue (`<bullPrefix>:<queue>:`; BullMQ owns those keys). */
  bullQueuePrefix(queue: string): string {
    return `${this.bullRoot}${queue}:`;
  }

  /**
   * BullMQ's meta hash of a queue, written when a job is first added (read by agentcom; BullMQ's
   * own `updateProgress`, inside `updateTaskProgress.lua`, may write its `opts.maxLenEvents`).
   */
  bullMeta(queue: string): string {
    return `${this.bullQueuePrefix(queue)}meta`;
  }

  /**
   * BullMQ's stream of a queue's job events (QueueEvents reads it; `updateTaskProgress.lua` adds
   * a job's `progress` event with BullMQ's own `updateProgress`).
   */
  bullEvents(queue: string): string {
    return `${this.bullQueuePrefix(queue)}events`;
  }

  /**
   * BullMQ's sorted set of a queue's delayed jobs (read only). Its score is the time the job is
   * due times 0x1000 plus a counter (BullMQ's `getDelayedScore`).
   */
  bullDelayed(queue: string): string {
    return `${this.bullQueuePrefix(queue)}delayed`;
  }

  /**
   * BullMQ's list (`wait`, `active`) or sorted set (the others) of a queue's jobs in one state
   * (read only), for counting them.
   */
  bullState(queue: string, state: BullCountedKey): string {
    return `${this.bullQueuePrefix(queue)}${state}`;
  }

  /** BullMQ's hash of a job (read only: BullMQ owns it). */
  bullJob(queue: string, taskId: string): string {
    return `${this.bullQueuePrefix(queue)}${taskId}`;
  }

  /**
   * BullMQ's deduplication key of an idempotency key in a queue: the id of the task it names.
   * BullMQ writes it when the task is created and deletes it when the task ends; agentcom sets
   * it again to outlive the task by 24 h (`settleIdempotencyKey.lua`, which builds the name from
   * {@link bullQueuePrefix} and the job's `deid`).
   */
  bullDeduplication(queue: string, idempotencyKey: string): string {
    return `${this.bullQueuePrefix(queue)}de:${idempotencyKey}`;
  }

  /** BullMQ's job schedulers of a queue (agentcom adds none; BullMQ's `removeJob` reads it). */
  bullRepeat(queue: string): string {
    return `${this.bullQueuePrefix(queue)}repeat`;
  }

  /** BullMQ's list of a job's log lines (`appendTaskLog.lua` appends as BullMQ's `addLog` does). */
  bullJobLogs(queue: string, taskId: string): string {
    return `${this.bullJob(queue, taskId)}:logs`;
  }

  /** BullMQ's lock key of a job (read only: BullMQ owns it). */
  bullLock(queue: string, taskId: string): string {
    return `${this.bullJob(queue, taskId)}:lock`;
  }
}

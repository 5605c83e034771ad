import { randomUUID } from 'node:crypto';
import { AppError, isAgentState, type AgentState } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';
import { hashFromFlat } from '../redis/replies';
import type {
  AgentScripts,
  ClaimAndFetchReply,
  ClaimReply,
  TransitionReply,
} from '../redis/scripts';
import { readAgentIdPage } from './agent-id-index';
import { parseAgentRecord, type AgentRecord } from './agent-record';
import { canTransition, type TransitionReason } from './agent-machine';

/** Index sorted sets a transition can add the agent to (with a score) or remove it from. */
export interface IndexOps {
  ackDeadline?: number | 'remove';
  disconnected?: number | 'remove';
  cooldown?: number | 'remove';
  runDeadline?: number | 'remove';
}

/** An agent claimed for an assignment. */
export interface Claim {
  agentId: string;
  version: number;
  /** The agent's queues, in its order. */
  queues: string[];
  /** Where to fetch the job from. */
  queue: string;
  /** The assignment token (also the job's BullMQ lock token). */
  token: string;
  /**
   * The connection the claimed record names: the push goes to it, not to whichever connection of
   * the agent a replica still holds (an older one whose replacement has not reached it yet).
   */
  socketId?: string;
  /**
   * When it became idle (ms; its score in the idle set it was claimed from): a claim that hands
   * out nothing puts it back with this score, in its place in the longest-idle line.
   */
  idleSince: number;
}

/** A job BullMQ handed out, as its hash (`data`, `opts`, `timestamp`, `atm`, `ats`, ...). */
export interface FetchedJob {
  id: string;
  fields: Record<string, string>;
}

/** The outcome of a whole dispatch step (`claimAndFetch.lua`). */
export type ClaimStep =
  /**
   * The task is recorded on the claimed agent (`claim.version` is after it): push it. `more`: the
   * step's queue still has a job waiting and an idle agent, so another step may assign too.
   */
  | { outcome: 'assigned'; claim: Claim; job: FetchedJob; more: boolean }
  /** Claimed and fetched, not recorded: the job is cancelled or must fail. */
  | { outcome: 'fetched'; claim: Claim; jobId: string }
  /** Claimed, but BullMQ handed out nothing (rate limit, maxed queue): free the agent. */
  | { outcome: 'claimed'; claim: Claim };

export type BeginReport =
  | { status: 'busy' }
  | {
      status: 'superseded';
      /** The finished key's value (a report's intent, see `report-intent.ts`, or a marker). */
      previousMarker: string;
    }
  | { status: 'duplicate'; record: AgentRecord | undefined }
  | {
      status: 'ok';
      record: AgentRecord;
      /** The finished key's value before this report (this report's intent: a replay). */
      previousMarker: string;
      /** Set when an operator asked to cancel the task. */
      cancelReason: string | undefined;
      /** This report's intent, the finished key's value now (see `report-intent.ts`). */
      intent: string;
    };

/** The part of an agent record a heartbeat checks. */
export interface AgentPresence {
  state: AgentState;
  socketId: string | undefined;
  taskId: string | undefined;
  token: string | undefined;
  taskQueue: string | undefined;
  /** When the record was assigned its task (epoch ms). */
  assignedAt: number | undefined;
  /**
   * True when the record, on the heartbeat's connection, is `working` on a task an operator asked
   * to cancel (absent otherwise).
   */
  cancelRequested?: true;
  /**
   * True when the record's token hash is not the one the heartbeat's connection authenticated
   * with: the token was revoked or replaced (absent otherwise).
   */
  tokenRevoked?: true;
}

export type IndexName = 'ackDeadlines' | 'disconnected' | 'cooldowns' | 'runDeadlines';

export interface TransitionRequest {
  agentId: string;
  /** Expected current state. */
  from: AgentState;
  to: AgentState;
  reason: TransitionReason;
  /** Expected current version (omit to compare the state and `expect` only). */
  version?: number;
  /** Further fields that must hold these values ("" = absent). */
  expect?: Record<string, string>;
  set?: Record<string, string | number>;
  del?: string[];
  incr?: Record<string, number>;
  /** Queues whose idle index gains (scored `idleSince`, or now) or loses the agent. */
  idleAdd?: readonly string[];
  /** The score of `idleAdd`'s entries: when the agent became idle (ms). Default now. */
  idleSince?: number;
  /** The idle index of every queue of the record's own `queues` gains the agent (scored now). */
  idleAddOwn?: boolean;
  idleRemove?: readonly string[];
  index?: IndexOps;
  /** Task id recorded on the event. */
  task?: string | undefined;
  /** Keys that must not exist; a present one is a conflict on field `@absent` (its value). */
  absent?: readonly string[];
  /** Applied whatever the outcome, before the checks. */
  always?: {
    /** SET key value PX ttlMs. */
    set?: ReadonlyArray<{ key: string; value: string; ttlMs: number }>;
    /** DEL key when it holds value. */
    delIf?: ReadonlyArray<{ key: string; value: string }>;
  };
}

export type TransitionResult =
  | { ok: true; version: number }
  | { ok: false; reason: 'conflict'; field: string; actual: string; state: string; version: number }
  | { ok: false; reason: 'missing' };

/** Why a connection whose token is no longer the agent's is refused and ended. */
export const TOKEN_REVOKED = 'the agent token was revoked or replaced';

/**
 * The refusal of a call made for a connection (`tokenHash`: the hash of the token it authenticated
 * with) when the record's token hash is another one, or none: the token was rotated or revoked
 * since, and the message that closes the connection has not reached its replica (Redis pub/sub
 * delivers at most once). Nothing was changed; the gateway answers it and ends the connection.
 */
export function tokenRevoked(): AppError {
  return new AppError('E_UNAUTHORIZED', TOKEN_REVOKED);
}

export class IllegalTransitionError extends Error {
  constructor(from: AgentState, to: AgentState, reason: string) {
    super(`illegal agent transition ${from} -> ${to} (${reason})`);
    this.name = 'IllegalTransitionError';
  }
}

export interface AgentStoreOptions {
  redis: Redis;
  scripts: AgentScripts;
  keys: RedisKeys;
  hubId: string;
  maxEvents?: number;
  /**
   * The clock of every time it writes (assignedAt, startedAt, deadlines, rests, disconnects, idle
   * scores, events): in a hub, Redis's (`RedisClock.now`), since other replicas compare
   * them. Default `Date.now` (tests with one clock).
   */
  now?: () => number;
}

/**
 * Reads agent records and changes them only through compare-and-set transitions checked against
 * the pure transition table. Every change bumps `version` and appends to the events stream.
 */
export class AgentStore {
  private readonly redis: Redis;
  private readonly scripts: AgentScripts;
  private readonly keys: RedisKeys;
  private readonly hubId: string;
  private readonly maxEvents: number;
  /** The clock of the times this store writes: compare stored times with it. */
  readonly now: () => number;

  constructor(options: AgentStoreOptions) {
    this.redis = options.redis;
    this.scripts = options.scripts;
    this.keys = options.keys;
    this.hubId = options.hubId;
    this.maxEvents = options.maxEvents ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  async get(agentId: string): Promise<AgentRecord | undefined> {
    return parseAgentRecord(agentId, await this.redis.hgetall(this.keys.agent(agentId)));
  }

  async getMany(agentIds: readonly string[]): Promise<AgentRecord[]> {
    if (agentIds.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of agentIds) pipeline.hgetall(this.keys.agent(id));
    const replies = (await pipeline.exec()) ?? [];
    const records: AgentRecord[] = [];
    replies.forEach(([err, hash], i) => {
      const id = agentIds[i];
      if (err || id === undefined) return;
      const record = parseAgentRecord(id, hash as Record<string, string>);
      if (record) records.push(record);
    });
    return records;
  }

  async listIds(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.agents)).sort();
  }

  /**
   * Up to `limit` agents in id order, the first after the agent id `after` (from the first
   * without), and the id to go on after when more follow: only the page's records are read (two
   * round trips once the id index is whole), whatever the number of agents. An agent present
   * throughout a walk of pages is listed exactly once, whatever is added or removed meanwhile
   * (pages start after an id, not at an offset).
   */
  async listPage(
    after: string | undefined,
    limit: number,
  ): Promise<{ records: AgentRecord[]; nextAfter?: string }> {
    const page = await readAgentIdPage(this.redis, this.keys, after, limit);
    const records = await this.getMany(page.ids);
    const last = page.ids[page.ids.length - 1];
    return page.more && last !== undefined ? { records, nextAfter: last } : { records };
  }

  /**
   * Creates the agent (offline) or replaces its token hash, in one script (`registerAgent.lua`):
   * no reader sees a record without its token hash, no revoke lands half-way. Returns true when
   * it was created. The record keeps its state and counters when the token is rotated; of
   * rotations that race, the one Redis applies last holds the only working token.
   */
  async register(
    agentId: string,
    tokenHash: string,
    allowedQueues?: readonly string[],
  ): Promise<boolean> {
    const outcome = await this.scripts.registerAgent(
      [this.keys.agent(agentId), this.keys.agents, this.keys.agentsById],
      allowedQueues ? [agentId, tokenHash, allowedQueues.join(',')] : [agentId, tokenHash],
    );
    return outcome === 'created';
  }

  /** Removes the agent's token hash; false when there is no such agent. */
  async revokeToken(agentId: string): Promise<boolean> {
    const key = this.keys.agent(agentId);
    const [[, exists]] = (await this.redis.multi().exists(key).hdel(key, 'tokenHash').exec()) as [
      [Error | null, number],
      [Error | null, number],
    ];
    return exists === 1;
  }

  async transition(request: TransitionRequest): Promise<TransitionResult> {
    const { keys, spec } = this.transitionCall(request);
    return transitionResult(await this.scripts.transition(keys, spec));
  }

  /**
   * A transition and, when it applied, {@link claimAndFetch} for `claimQueue`, in one script
   * (`transitionThenClaim`): a report that frees an agent hands out the next task at once.
   */
  async transitionThenClaim(
    request: TransitionRequest,
    claimQueue: string,
    ackTimeoutMs: number,
    lockMs: number,
  ): Promise<{ result: TransitionResult; step: ClaimStep | undefined }> {
    const { keys, spec } = this.transitionCall(request);
    const claim = this.claimAndFetchCall(claimQueue, ackTimeoutMs, lockMs);
    const [reply, claimed] = await this.scripts.transitionThenClaim(
      keys,
      spec,
      claim.keys,
      claim.args,
    );
    return { result: transitionResult(reply), step: claimStepFrom(claimed) };
  }

  /**
   * A completion in one script (`completeAtOnce.lua`) when nothing about it is unusual: BullMQ's
   * `moveToFinished` (its keys and ARGV as BullMQ builds them: `bull`), then `release` (a
   * transition the caller builds for the plain case, working → idle), then, when the agent is
   * idle, the next dispatch step for the task's queue. `slow`: nothing changed, the caller takes
   * the step-by-step path. `unsettled`: the task's idempotency key, whose settle Redis refused
   * (the rest went through), and the error. With `tokenHash` (the reporting connection's), throws
   * {@link tokenRevoked} when the record's token is another one, nothing changed.
   */
  async completeAtOnce(options: {
    taskId: string;
    token: string;
    tokenHash?: string;
    bull: { keys: readonly string[]; args: ReadonlyArray<string | number | Buffer> };
    release: TransitionRequest;
    claimQueue: string;
    ackTimeoutMs: number;
    lockMs: number;
  }): Promise<
    | { status: 'slow' }
    | {
        status: 'completed';
        startedAt: number | undefined;
        queues: string[];
        result: TransitionResult;
        step: ClaimStep | undefined;
        unsettled: { idempotencyKey: string; error: string } | undefined;
      }
  > {
    const { taskId, token, bull } = options;
    const release = this.transitionCall(options.release);
    const claim = this.claimAndFetchCall(options.claimQueue, options.ackTimeoutMs, options.lockMs);
    const reply = await this.scripts.completeAtOnce(
      [
        this.keys.agent(options.release.agentId),
        this.keys.reporting(taskId),
        this.keys.finished(taskId),
        ...bull.keys,
        ...release.keys,
        ...claim.keys,
      ],
      [
        taskId,
        token,
        options.tokenHash ?? '',
        release.keys.length,
        bull.args.length,
        ...bull.args,
        release.spec,
        ...claim.args,
      ],
    );
    if (reply[0] === 'revoked') throw tokenRevoked();
    if (reply[0] === 'slow') return { status: 'slow' };
    const [, startedAt, queues, transitionReply, claimed, unsettled] = reply;
    return {
      status: 'completed',
      startedAt: startedAt === '' ? undefined : Number(startedAt),
      queues: queues.split(',').filter(Boolean),
      result: transitionResult(transitionReply),
      step: claimStepFrom(claimed),
      unsettled: unsettled ? { idempotencyKey: unsettled[0], error: unsettled[1] } : undefined,
    };
  }

  /**
   * A whole dispatch step in one script (`claimAndFetch.lua`): {@link claimIdle}, then BullMQ's
   * fetch of the next job of the claim's queue locked with the assignment token for `lockMs`,
   * then the task recorded on the agent.
   */
  async claimAndFetch(
    queue: string,
    ackTimeoutMs: number,
    lockMs: number,
  ): Promise<ClaimStep | undefined> {
    const { keys, args } = this.claimAndFetchCall(queue, ackTimeoutMs, lockMs);
    return claimStepFrom(await this.scripts.claimAndFetch(keys, args));
  }

  private claimAndFetchCall(
    queue: string,
    ackTimeoutMs: number,
    lockMs: number,
  ): { keys: [string, string, string]; args: (string | number)[] } {
    const { keys, args } = this.claimCall(queue, ackTimeoutMs);
    return { keys, args: [...args, lockMs, this.keys.cancelRequestedPrefix] };
  }

  /** The keys and spec of a transition script call; throws on an illegal transition. */
  private transitionCall(request: TransitionRequest): { keys: string[]; spec: string } {
    if (!canTransition(request.from, request.to)) {
      throw new IllegalTransitionError(request.from, request.to, request.reason);
    }
    const now = this.now();
    const keys: string[] = [this.keys.agent(request.agentId), this.keys.events];
    const keyIndex = (key: string): number => {
      const at = keys.indexOf(key);
      if (at >= 0) return at + 1;
      keys.push(key);
      return keys.length;
    };
    const zadd: Array<[number, number]> = [];
    const zrem: number[] = [];
    for (const queue of request.idleRemove ?? []) zrem.push(keyIndex(this.keys.idle(queue)));
    const idleScore = request.idleSince ?? now;
    for (const queue of request.idleAdd ?? [])
      zadd.push([keyIndex(this.keys.idle(queue)), idleScore]);
    const indexKeys: Record<keyof IndexOps, string> = {
      ackDeadline: this.keys.ackDeadlines,
      disconnected: this.keys.disconnected,
      cooldown: this.keys.cooldowns,
      runDeadline: this.keys.runDeadlines,
    };
    for (const [name, op] of Object.entries(request.index ?? {}) as Array<
      [keyof IndexOps, number | 'remove' | undefined]
    >) {
      if (op === undefined) continue;
      if (op === 'remove') zrem.push(keyIndex(indexKeys[name]));
      else zadd.push([keyIndex(indexKeys[name]), op]);
    }
    const absent = (request.absent ?? []).map(keyIndex);
    const kset = (request.always?.set ?? []).map((op) => [keyIndex(op.key), op.value, op.ttlMs]);
    const kdelIf = (request.always?.delIf ?? []).map((op) => [keyIndex(op.key), op.value]);
    const expect: Record<string, string> = { state: request.from, ...request.expect };
    if (request.version !== undefined) expect.version = String(request.version);
    const set: Record<string, string> = { state: request.to };
    for (const [field, value] of Object.entries(request.set ?? {})) set[field] = String(value);
    const spec = {
      agentId: request.agentId,
      expect,
      set,
      del: request.del ?? [],
      incr: request.incr ?? {},
      zadd,
      zrem,
      event: { reason: request.reason, task: request.task ?? '', hub: this.hubId },
      now: String(now),
      maxEvents: this.maxEvents,
      ...(absent.length > 0 ? { absent } : {}),
      ...(request.idleAddOwn ? { idleAddOwn: this.keys.idlePrefix } : {}),
      ...(kset.length > 0 ? { kset } : {}),
      ...(kdelIf.length > 0 ? { kdelIf } : {}),
    };
    return { keys, spec: JSON.stringify(spec) };
  }

  /**
   * When a job of `queue` is runnable, claims the longest-idle agent serving it (idle →
   * assigned) with a new assignment token, and names the first of the agent's queues (in its
   * order) with a runnable job: the queue to fetch from.
   */
  async claimIdle(queue: string, ackTimeoutMs: number): Promise<Claim | undefined> {
    const { keys, args } = this.claimCall(queue, ackTimeoutMs);
    return claimFrom(await this.scripts.claimIdle(keys, args));
  }

  private claimCall(
    queue: string,
    ackTimeoutMs: number,
  ): { keys: [string, string, string]; args: (string | number)[] } {
    // One time for the claim's record (assignedAt, the ack deadline: on Redis's clock, compared by
    // every replica) and for BullMQ's part of the step (a delayed job due, the fetch's
    // processedOn): delays are then judged on Redis's clock here as in `promoteDue`, whichever
    // replica claims. A delay counts from the job's stamp, on Redis's clock too (TaskService).
    const now = this.now();
    return {
      keys: [this.keys.idle(queue), this.keys.events, this.keys.ackDeadlines],
      args: [
        this.keys.agentPrefix,
        this.keys.idlePrefix,
        String(now),
        String(now + ackTimeoutMs),
        this.hubId,
        this.maxEvents,
        queue,
        this.keys.bullRoot,
        randomUUID(),
      ],
    };
  }

  /**
   * assigned → working for the task the agent holds under `token` (one script). `replayed` when
   * it was already working on it; undefined when it does not hold the task. With `leaseMs`, the
   * job's BullMQ lock must still be the token too, and is renewed for that long (`accept.lua`).
   * With `tokenHash` (the accepting connection's), throws {@link tokenRevoked} when the record's
   * token is another one, nothing changed.
   */
  async accept(
    agentId: string,
    taskId: string,
    token: string,
    leaseMs?: number,
    tokenHash?: string,
  ): Promise<{ version: number; taskQueue: string; replayed: boolean } | undefined> {
    const fence = leaseMs === undefined ? [] : [this.keys.bullRoot, leaseMs];
    const reply = await this.scripts.accept(
      [this.keys.agent(agentId), this.keys.events, this.keys.ackDeadlines, this.keys.runDeadlines],
      [
        agentId,
        taskId,
        token,
        String(this.now()),
        this.hubId,
        this.maxEvents,
        tokenHash ?? '',
        ...fence,
      ],
    );
    if (reply[0] === -1) throw tokenRevoked();
    if (reply[0] === 0) return undefined;
    return { version: Number(reply[1]), taskQueue: String(reply[2]), replayed: reply[0] === 2 };
  }

  /**
   * The first step of applying a report (see `beginReport.lua`): takes the task's report lock
   * (owner `lockId`), answers a replay of an applied report as `duplicate`, checks the agent
   * still holds the task under `token`, and records the report's intent. With `tokenHash` (the
   * reporting connection's), throws {@link tokenRevoked} first when the record's token is another
   * one, nothing changed (no lock taken).
   */
  async beginReport(request: {
    agentId: string;
    taskId: string;
    token: string;
    tokenHash?: string;
    outcome: 'completed' | 'failed';
    lockId: string;
    lockTtlMs: number;
    finishedTtlMs: number;
  }): Promise<BeginReport> {
    const { agentId, taskId } = request;
    const reply = await this.scripts.beginReport(
      [this.keys.agent(agentId), this.keys.reporting(taskId), this.keys.finished(taskId)],
      [
        taskId,
        request.token,
        request.outcome,
        request.lockId,
        request.lockTtlMs,
        request.finishedTtlMs,
        this.keys.bullRoot,
        request.tokenHash ?? '',
        this.keys.cancelRequestedPrefix,
      ],
    );
    const record = (flat: string[]): AgentRecord | undefined =>
      parseAgentRecord(agentId, hashFromFlat(flat));
    switch (reply[0]) {
      case 'revoked':
        throw tokenRevoked();
      case 'busy':
        return { status: 'busy' };
      case 'superseded':
        return { status: 'superseded', previousMarker: reply[1] };
      case 'duplicate':
        return { status: 'duplicate', record: record(reply[1]) };
      default: {
        const current = record(reply[1]);
        if (!current) return { status: 'superseded', previousMarker: reply[2] };
        return {
          status: 'ok',
          record: current,
          previousMarker: reply[2],
          cancelReason: reply[3] === '' ? undefined : reply[3],
          intent: reply[4],
        };
      }
    }
  }

  /** Drops the task's report lock taken by {@link beginReport}, if it is still `lockId`'s. */
  async releaseReportLock(taskId: string, lockId: string): Promise<void> {
    await this.scripts.delIfEquals(this.keys.reporting(taskId), lockId);
  }

  /**
   * Sets the task's finished key to `value` ("" deletes it) while it still holds `expected`: a
   * report's intent is put back as it was before, or replaced by the report's outcome.
   */
  async replaceFinished(
    taskId: string,
    expected: string,
    value: string,
    ttlMs: number,
  ): Promise<void> {
    await this.scripts.replaceIfEquals(this.keys.finished(taskId), expected, value, ttlMs);
  }

  /** Sets a lock `key` held by `token` to last `ttlMs` from now; false when it is not `token`'s. */
  async renewLock(key: string, token: string, ttlMs: number): Promise<boolean> {
    return (await this.scripts.replaceIfEquals(key, token, token, ttlMs)) === 1;
  }

  /** The id of the active job of `queue` locked with `token` (a recovery path: O(active)). */
  async jobLockedBy(queue: string, token: string): Promise<string | undefined> {
    return (await this.scripts.findJobByLock(this.keys.bullQueuePrefix(queue), token)) ?? undefined;
  }

  /**
   * Heartbeats, checked together (one script): what each one needs of its agent's record, and
   * the heartbeat time recorded on the agents whose record still names the connection the
   * heartbeat came on. `undefined` for an agent without a record. For a working agent on that
   * connection, the same call tells whether a cancel of its task is pending (`cancelRequested`).
   */
  async heartbeats(
    beats: ReadonlyArray<{ agentId: string; socketId: string; tokenHash: string }>,
  ): Promise<Array<AgentPresence | undefined>> {
    if (beats.length === 0) return [];
    const flat = await this.scripts.heartbeats(
      beats.map((b) => this.keys.agent(b.agentId)),
      [
        String(this.now()),
        ...beats.map((b) => b.socketId),
        this.keys.cancelRequestedPrefix,
        ...beats.map((b) => b.tokenHash),
      ],
    );
    const value = (v: string | undefined) => (v === undefined || v === '' ? undefined : v);
    return beats.map((_, i) => {
      const [state, socketId, taskId, token, taskQueue, assignedAt, cancel, revoked] = flat.slice(
        i * 8,
        i * 8 + 8,
      );
      if (!state) return undefined;
      const presence: AgentPresence = {
        state: isAgentState(state) ? state : 'offline',
        socketId: value(socketId),
        taskId: value(taskId),
        token: value(token),
        taskQueue: value(taskQueue),
        assignedAt: assignedAt ? Number(assignedAt) : undefined,
      };
      if (cancel === '1') presence.cancelRequested = true;
      if (revoked === '1') presence.tokenRevoked = true;
      return presence;
    });
  }

  /** Agents whose score in an index sorted set is at or below `max`. */
  async dueIn(index: IndexName, max: number, limit = 200): Promise<string[]> {
    return this.redis.zrangebyscore(this.keys[index], '-inf', String(max), 'LIMIT', 0, limit);
  }

  /**
   * Drops a stale entry listed by {@link dueIn} with `dueBy`: only while it is still due by then.
   * An entry made since for a new deadline (the agent re-entered the index) stays.
   */
  async removeFromIndex(index: IndexName, agentId: string, dueBy: number): Promise<void> {
    await this.scripts.removeIfDue(this.keys[index], agentId, dueBy);
  }

  /** Idle agents of a queue, longest idle first. */
  async idleAgents(queue: string): Promise<string[]> {
    return this.redis.zrange(this.keys.idle(queue), '0', '-1');
  }
}

function transitionResult(reply: TransitionReply): TransitionResult {
  if (reply[0] === 1) return { ok: true, version: Number(reply[1]) };
  if (reply[0] === 0) {
    return {
      ok: false,
      reason: 'conflict',
      field: String(reply[1]),
      actual: String(reply[2]),
      state: String(reply[3]),
      version: Number(reply[4]),
    };
  }
  return { ok: false, reason: 'missing' };
}

function claimStepFrom(reply: ClaimAndFetchReply): ClaimStep | undefined {
  if (!reply) return undefined;
  const claim = claimFrom([reply[0], reply[1], reply[2], reply[3], reply[4], reply[5], reply[6]]);
  if (!claim) return undefined;
  switch (reply[7]) {
    case 'assigned':
      return {
        outcome: 'assigned',
        claim,
        job: { id: reply[8], fields: hashFromFlat(reply[9]) },
        more: reply[10] === 1,
      };
    case 'fetched':
      return { outcome: 'fetched', claim, jobId: reply[8] };
    default:
      return { outcome: 'claimed', claim };
  }
}

function claimFrom(reply: ClaimReply): Claim | undefined {
  if (!reply) return undefined;
  const [agentId, version, queues, fetchFrom, token, socketId, idleSince] = reply;
  return {
    agentId,
    version: Number(version),
    queues: queues.split(',').filter(Boolean),
    queue: fetchFrom,
    token,
    ...(socketId ? { socketId } : {}),
    idleSince: Number(idleSince),
  };
}

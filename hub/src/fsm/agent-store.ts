import type { AgentState } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';
import type { AgentScripts } from '../redis/scripts';
import { parseAgentRecord, type AgentRecord } from './agent-record';
import { canTransition, type TransitionReason } from './agent-machine';

/** Index sorted sets a transition can add the agent to (with a score) or remove it from. */
export interface IndexOps {
  ackDeadline?: number | 'remove';
  disconnected?: number | 'remove';
  cooldown?: number | 'remove';
  runDeadline?: number | 'remove';
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
  /** Queues whose idle index gains (scored now) or loses the agent. */
  idleAdd?: readonly string[];
  idleRemove?: readonly string[];
  index?: IndexOps;
  /** Task id recorded on the event. */
  task?: string | undefined;
}

export type TransitionResult =
  | { ok: true; version: number }
  | { ok: false; reason: 'conflict'; field: string; actual: string; state: string; version: number }
  | { ok: false; reason: 'missing' };

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
   * Creates the agent (offline) or replaces its token hash. Returns true when it was created.
   * The record keeps its state and counters when the token is rotated.
   */
  async register(
    agentId: string,
    tokenHash: string,
    allowedQueues?: readonly string[],
  ): Promise<boolean> {
    const key = this.keys.agent(agentId);
    const created = await this.redis.hsetnx(key, 'state', 'offline');
    const fields: Record<string, string> = { tokenHash };
    if (allowedQueues) fields.allowedQueues = allowedQueues.join(',');
    await this.redis
      .multi()
      .hsetnx(key, 'version', '0')
      .hset(key, fields)
      .sadd(this.keys.agents, agentId)
      .exec();
    return created === 1;
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
    for (const queue of request.idleAdd ?? []) zadd.push([keyIndex(this.keys.idle(queue)), now]);
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
    };
    const reply = await this.scripts.transition(keys, JSON.stringify(spec));
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

  /** Claims the longest-idle agent of `queue` (idle → assigned). */
  async claimIdle(
    queue: string,
    ackTimeoutMs: number,
  ): Promise<{ agentId: string; version: number; queues: string[] } | undefined> {
    const now = this.now();
    const reply = await this.scripts.claimIdle(
      [this.keys.idle(queue), this.keys.events, this.keys.ackDeadlines],
      [
        this.keys.agentPrefix,
        this.keys.idlePrefix,
        String(now),
        String(now + ackTimeoutMs),
        this.hubId,
        this.maxEvents,
        queue,
      ],
    );
    if (!reply) return undefined;
    const [agentId, version, queues] = reply;
    return { agentId, version: Number(version), queues: queues.split(',').filter(Boolean) };
  }

  /** Agents whose score in an index sorted set is at or below `max`. */
  async dueIn(index: IndexName, max: number, limit = 200): Promise<string[]> {
    return this.redis.zrangebyscore(this.keys[index], '-inf', String(max), 'LIMIT', 0, limit);
  }

  async removeFromIndex(index: IndexName, agentId: string): Promise<void> {
    await this.redis.zrem(this.keys[index], agentId);
  }

  /** Idle agents of a queue, longest idle first. */
  async idleAgents(queue: string): Promise<string[]> {
    return this.redis.zrange(this.keys.idle(queue), '0', '-1');
  }
}

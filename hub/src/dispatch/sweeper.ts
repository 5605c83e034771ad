import type { TaskFail } from '@agentcom/shared';
import type { Redis } from 'ioredis';
import type { Presence } from '../agents/presence';
import { ackTimeoutCooldownMs, restingState } from '../fsm/agent-machine';
import type { AgentRecord } from '../fsm/agent-record';
import type { AgentStore } from '../fsm/agent-store';
import type { Logger } from '../logger';
import type { RedisClock } from '../redis/redis-clock';
import type { RedisKeys } from '../redis/keys';
import { TASK_FIELDS } from './assignments';
import type { AgentNotifier } from './notifier';

export interface SweeperOptions {
  redis: Redis;
  keys: RedisKeys;
  /**
   * The clock of the times the sweep compares (the agent store's): Redis's, measured again at
   * each liveness refresh.
   */
  clock: RedisClock;
  agents: AgentStore;
  presence: Presence;
  notifier: AgentNotifier;
  hubId: string;
  leaseMs: number;
  /** How long an assigned agent has to accept (`ACK_TIMEOUT_MS`). */
  ackTimeoutMs: number;
  /** Bound on the cooldown of an agent that lets ack timeouts pass in a row (`ACK_COOLDOWN_MAX_MS`). */
  ackCooldownMaxMs: number;
  heartbeatMs: number;
  sweepMs: number;
  /** How long an agent has to report after being told its task timed out. */
  runTimeoutGraceMs: number;
  logger: Logger;
  onAgentIdle: (queues: readonly string[]) => void;
  /** Fails an attempt as its agent would (the run-timeout backstop). */
  failAttempt: (agentId: string, report: TaskFail) => Promise<unknown>;
  /**
   * The dispatcher's safety tick: runs every `sweepMs`, at most every {@link MAX_TICK_MS}, on a
   * timer of its own (a long sweep must not hold dispatch up: delayed tasks become due, and tasks
   * added straight to BullMQ show up, only at a tick). A tick still running is not started again.
   */
  onTick?: () => Promise<void>;
}

/** The safety tick's longest period, whatever `SWEEP_MS` is. */
export const MAX_TICK_MS = 1000;

/**
 * Finds stuck work on every replica (all steps are compare-and-set, so replicas sweeping at the
 * same time do each thing once). The times it compares were written by any replica, all on
 * Redis's clock, and it reads them on the same clock (`clock`). Each step reads the agents an
 * index lists as due, then each record, and acts only when the record itself is overdue: the list
 * may be stale by then (a long sweep, another replica's), and an agent listed for one task may
 * hold the next one already.
 * - refreshes this replica's liveness, on a timer of its own (a long sweep must not let the
 *   other replicas take this one for gone);
 * - assigned agents that did not accept in time: task back to wait, agent in cooldown for an
 *   ack timeout, twice as long at each further miss in a row (another agent gets the task
 *   meanwhile);
 * - disconnected task holders past the lease: agent offline (the stalled checker requeues the job);
 * - cooldowns that ended: agent idle;
 * - tasks past their run timeout: the agent is told to stop (`task:cancel` reason `timeout`);
 *   if it has not reported a grace later, the attempt is failed here as `timeout`;
 * - replicas that stopped refreshing: their agents are disconnected as `replica_gone` (not within
 *   three heartbeats of this replica's own reconnection to Redis: the others lost it as well).
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private ticking: Promise<void> | undefined;
  /**
   * When this replica's Redis connection last came back (`performance.now()`; undefined: never
   * lost since start). The other replicas could not refresh their liveness while Redis was away
   * either, and some reconnect later than this one: until they had the same time to refresh,
   * none is judged gone. A local duration: on the local clock, unmoved by a new offset to Redis's.
   */
  private reachableSince: number | undefined;
  private readonly onRedisReady = (): void => {
    this.reachableSince = performance.now();
    void this.refreshLiveness();
  };

  constructor(private readonly options: SweeperOptions) {}

  start(): void {
    // others take a replica for gone after 3 heartbeat intervals without a refresh
    void this.refreshLiveness();
    this.livenessTimer = setInterval(
      () => void this.refreshLiveness(),
      this.options.heartbeatMs / 2,
    );
    this.livenessTimer.unref();
    this.timer = setInterval(() => this.runOnce(), this.options.sweepMs);
    this.timer.unref();
    this.tickTimer = setInterval(
      () => this.tickOnce(),
      Math.min(this.options.sweepMs, MAX_TICK_MS),
    );
    this.tickTimer.unref();
    this.options.redis.on('ready', this.onRedisReady);
    this.runOnce();
    this.tickOnce();
  }

  /**
   * Records that this replica is alive (the `replicas` sorted set, scored by Redis's clock: the
   * replicas compare each other's times, and their own clocks may disagree by more than the three
   * heartbeats that make one gone), then measures the clock again for the next writes. Not while
   * the connection is away: a refresh queued then would land late with a stale time (and they
   * piled up in ioredis' offline queue); the connection's return refreshes at once instead.
   */
  async refreshLiveness(): Promise<void> {
    const { redis, keys, hubId, clock, logger } = this.options;
    if (redis.status !== 'ready') return;
    // measured first only when its time may be off by more than a round trip (the machine's
    // clock stepped or slept, or Redis answered slowly only): a score behind would look silent
    const measuredFirst: Promise<unknown> = clock.suspect ? clock.measure() : Promise.resolve();
    await measuredFirst
      .then(() => redis.zadd(keys.replicas, clock.now(), hubId))
      .then(() => clock.measure())
      .catch((err: unknown) => logger.warn({ err: String(err) }, 'liveness refresh failed'));
  }

  /**
   * Before this replica takes connections: agents whose record names this replica's id with a
   * socket are left by an earlier process under the same `HUB_ID` (a restart: compose and
   * `make cluster` give replicas fixed ids). None of those sockets is here, and since this id
   * refreshes its liveness again the other replicas never take it for gone: their disconnects
   * are recorded now, as for a replica that is gone.
   */
  async disconnectEarlierSelf(): Promise<void> {
    const count = await this.disconnectAgentsOf([this.options.hubId]);
    if (count > 0) {
      this.options.logger.info(
        { agents: count },
        'agents left by an earlier process of this replica disconnected',
      );
    }
  }

  private runOnce(): void {
    if (this.running) return;
    this.running = this.sweep()
      .catch((err: unknown) => this.options.logger.warn({ err: String(err) }, 'sweep failed'))
      .finally(() => {
        this.running = undefined;
      });
  }

  private tickOnce(): void {
    const { onTick } = this.options;
    if (this.ticking || !onTick) return;
    this.ticking = onTick()
      .catch(() => undefined)
      .finally(() => {
        this.ticking = undefined;
      });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.options.redis.off('ready', this.onRedisReady);
    this.timer = undefined;
    this.livenessTimer = undefined;
    this.tickTimer = undefined;
    await this.running;
    await this.ticking;
    // The liveness entry is left to age out: should a disconnect have gone unrecorded, the other
    // replicas then sweep this replica's agents as `replica_gone`.
  }

  async sweep(): Promise<void> {
    const { clock } = this.options;
    // the first sweep of a sweeper started before any liveness refresh was answered; or the
    // machine's clock stepped (or slept) since the last measurement, or only slow ones were
    // answered: the sweep judges on a measurement made now
    if (clock.suspect) await clock.measure();
    const now = clock.now();
    await this.ackTimeouts(now);
    await this.expiredLeases(now);
    await this.endedCooldowns(now);
    await this.runTimeouts(now);
    await this.goneReplicas(now);
  }

  private async runTimeouts(now: number): Promise<void> {
    const { agents, notifier } = this.options;
    for (const agentId of await agents.dueIn('runDeadlines', now)) {
      const record = await agents.get(agentId);
      if (
        !record ||
        record.state !== 'working' ||
        !record.taskId ||
        !record.token ||
        // listed for an earlier task: the one it works on now has no run timeout
        (record.taskTimeoutMs === undefined && record.timeoutNotifiedAt === undefined)
      ) {
        await agents.removeFromIndex('runDeadlines', agentId, now);
        continue;
      }
      if (!this.runOverdue(record, now)) continue; // listed for an earlier task, or notified since
      // Both stages start a grace on the record first, compare-and-set: one replica goes on.
      // At the second, another that listed the agent too and read the record before this write
      // fails it; one that reads it after finds the grace started again. Its cancel, sent once
      // this replica's retry may have been pushed, would stop the retry. A replica that dies
      // before failing the attempt leaves it to the next sweep, a grace later.
      const told = record.timeoutNotifiedAt !== undefined;
      const graceStarted = await agents.transition({
        agentId,
        from: 'working',
        to: 'working',
        version: record.version,
        reason: 'timeout',
        task: record.taskId,
        set: { timeoutNotifiedAt: now },
        index: { runDeadline: now + this.options.runTimeoutGraceMs },
      });
      if (!graceStarted.ok) continue;
      if (!told) {
        notifier.cancel(agentId, { taskId: record.taskId, reason: 'timeout', token: record.token });
        continue;
      }
      this.options.logger.warn(
        { agentId, taskId: record.taskId },
        'no report after the run timeout: failing the attempt',
      );
      // Told first: the failure may hand the same task straight back to this agent (a retry,
      // claimed in the same script); the cancel names this assignment, so a sidecar that gets
      // the retry's push first still ignores it.
      notifier.cancel(agentId, {
        taskId: record.taskId,
        reason: 'superseded',
        token: record.token,
      });
      await this.options
        .failAttempt(agentId, {
          taskId: record.taskId,
          token: record.token,
          error: `timed out after ${record.taskTimeoutMs ?? 0} ms (no report from the agent)`,
          retryable: true,
          kind: 'timeout',
        })
        .catch((err: unknown) =>
          this.options.logger.warn({ agentId, err: String(err) }, 'timeout backstop failed'),
        );
    }
  }

  /**
   * True when the record's task is past its run timeout (not yet notified) or past the grace
   * after the notice. A record without its start time counts as overdue, as listed (one without
   * a run timeout is not listed for its task: see {@link runTimeouts}).
   */
  private runOverdue(record: AgentRecord, now: number): boolean {
    if (record.timeoutNotifiedAt !== undefined) {
      return record.timeoutNotifiedAt + this.options.runTimeoutGraceMs <= now;
    }
    if (record.startedAt === undefined || record.taskTimeoutMs === undefined) return true;
    return record.startedAt + record.taskTimeoutMs <= now;
  }

  private async ackTimeouts(now: number): Promise<void> {
    const { agents, presence, notifier } = this.options;
    for (const agentId of await agents.dueIn('ackDeadlines', now)) {
      const record = await agents.get(agentId);
      if (!record || record.state !== 'assigned') {
        await agents.removeFromIndex('ackDeadlines', agentId, now);
        continue;
      }
      // listed for an earlier assignment: this one was claimed since
      if (record.assignedAt !== undefined && record.assignedAt + this.options.ackTimeoutMs > now) {
        continue;
      }
      const connected = record.socketId !== undefined && record.disconnectedAt === undefined;
      // An agent that was pushed its task (the task is recorded: the push follows at once) and
      // did not accept it rests in cooldown: the task goes to another agent meanwhile, not
      // straight back to this one (a claim prefers an agent of its own replica, and a lone agent
      // is the only one). The rest doubles at each miss in a row (`missedAcks`, reset by an
      // accept), up to a bound: a silent agent (a wedged sidecar, connected and heartbeating)
      // would otherwise take a task, and delay it, every two ack timeouts for ever. An agent that
      // was claimed but never told (its replica died before recording the task) did nothing
      // wrong: it rests as usual. Neither it nor one that disconnected counts a miss.
      const missed = connected && record.taskId !== undefined;
      const missedAcks = missed ? record.missedAcks + 1 : record.missedAcks;
      const restMs = ackTimeoutCooldownMs(
        missedAcks,
        this.options.ackTimeoutMs,
        this.options.ackCooldownMaxMs,
      );
      const cooldownUntil = missed
        ? Math.max(record.cooldownUntil ?? 0, now + restMs)
        : record.cooldownUntil;
      const to = connected
        ? restingState({ drainRequested: record.drainRequested, cooldownUntil, now })
        : 'offline';
      const result = await agents.transition({
        agentId,
        from: 'assigned',
        to,
        version: record.version,
        reason: 'ack_timeout',
        task: record.taskId,
        set: {
          ...(to === 'cooldown' ? { cooldownUntil: cooldownUntil ?? now } : {}),
          ...(missed ? { missedAcks } : {}),
        },
        del: TASK_FIELDS,
        idleAdd: to === 'idle' ? record.queues : [],
        index: {
          ackDeadline: 'remove',
          disconnected: 'remove',
          ...(to === 'cooldown' ? { cooldown: cooldownUntil ?? now } : {}),
        },
      });
      if (!result.ok) continue;
      if (missed && missedAcks > 1) {
        // the operator's cue: the agent is connected, yet lets its tasks pass
        this.options.logger.warn(
          { agentId, taskId: record.taskId, missedAcks, cooldownMs: restMs },
          'ack timeouts in a row: task back to wait, agent rests longer',
        );
      } else {
        this.options.logger.info(
          { agentId, taskId: record.taskId, ...(missed ? { missedAcks, cooldownMs: restMs } : {}) },
          'ack timeout: task back to wait',
        );
      }
      await presence.requeue(record);
      if (record.taskId) {
        const { taskId, token } = record;
        notifier.cancel(agentId, { taskId, reason: 'superseded', ...(token ? { token } : {}) });
      }
      if (to === 'idle') this.options.onAgentIdle(record.queues);
    }
  }

  private async expiredLeases(now: number): Promise<void> {
    const { agents, leaseMs } = this.options;
    const dueBy = now - leaseMs;
    for (const agentId of await agents.dueIn('disconnected', dueBy)) {
      const record = await agents.get(agentId);
      if (!record || record.disconnectedAt === undefined || record.socketId !== undefined) {
        await agents.removeFromIndex('disconnected', agentId, dueBy);
        continue;
      }
      if (record.disconnectedAt > now - leaseMs) continue;
      const result = await agents.transition({
        agentId,
        from: record.state,
        to: 'offline',
        version: record.version,
        reason: 'lease_expired',
        task: record.taskId,
        del: [...TASK_FIELDS, 'disconnectedAt'],
        index: { disconnected: 'remove', ackDeadline: 'remove', runDeadline: 'remove' },
      });
      if (result.ok) {
        this.options.logger.info(
          { agentId, taskId: record.taskId },
          'lease expired: agent offline',
        );
      }
    }
  }

  private async endedCooldowns(now: number): Promise<void> {
    const { agents } = this.options;
    for (const agentId of await agents.dueIn('cooldowns', now)) {
      const record = await agents.get(agentId);
      if (!record || record.state !== 'cooldown') {
        await agents.removeFromIndex('cooldowns', agentId, now);
        continue;
      }
      // listed for a rest that ended: the agent rests again since, until later (its entry too)
      if (record.cooldownUntil !== undefined && record.cooldownUntil > now) continue;
      const to = record.drainRequested ? 'draining' : 'idle';
      const result = await agents.transition({
        agentId,
        from: 'cooldown',
        to,
        version: record.version,
        reason: 'cooldown_over',
        del: ['cooldownUntil'],
        idleAdd: to === 'idle' ? record.queues : [],
        index: { cooldown: 'remove' },
      });
      if (result.ok && to === 'idle') this.options.onAgentIdle(record.queues);
    }
  }

  private async goneReplicas(now: number): Promise<void> {
    const { redis, keys, hubId, heartbeatMs } = this.options;
    if (
      this.reachableSince !== undefined &&
      performance.now() - this.reachableSince < 3 * heartbeatMs
    ) {
      return;
    }
    // as of the start of this sweep (after a stall, the refreshes other replicas sent during it
    // are answered before this read)
    const silentSince = now - 3 * heartbeatMs;
    const gone = (await redis.zrangebyscore(keys.replicas, '-inf', silentSince)).filter(
      (id) => id !== hubId,
    );
    if (gone.length === 0) return;
    await this.disconnectAgentsOf(gone);
    for (const id of gone) await redis.zrem(keys.replicas, id);
    this.options.logger.info({ replicas: gone }, 'replicas gone: their agents disconnected');
  }

  /** Records the disconnect (`replica_gone`) of every agent connected to one of `replicaIds`. */
  private async disconnectAgentsOf(replicaIds: readonly string[]): Promise<number> {
    const { agents, presence } = this.options;
    const records = await agents.getMany(await agents.listIds());
    let count = 0;
    for (const record of records) {
      if (record.hubId && replicaIds.includes(record.hubId) && record.socketId) {
        await presence.disconnect(record.agentId, record.socketId, 'replica_gone');
        count++;
      }
    }
    return count;
  }
}

import { AppError, type AgentState, type HandshakeAuth, type TaskCancel } from '@agentcom/shared';
import { hashToken, tokenMatches } from '../auth/tokens';
import type { Redis } from 'ioredis';
import type { AgentRecord } from '../fsm/agent-record';
import { restingState, type TransitionReason } from '../fsm/agent-machine';
import type { AgentStore } from '../fsm/agent-store';
import { TASK_FIELDS } from '../dispatch/assignments';
import type { LeaseKeeper } from '../dispatch/lease-keeper';
import type { Logger } from '../logger';
import type { QueueRegistry } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';
import { luaScript } from '../redis/scripts';

const MAX_CAS_RETRIES = 8;
const RESTORE_AGENT = luaScript('restoreAgent');

export interface PresenceOptions {
  redis: Redis;
  keys: RedisKeys;
  agents: AgentStore;
  queues: QueueRegistry;
  leases: LeaseKeeper;
  hubId: string;
  /**
   * `LEASE_MS`: a resumed task's lock is renewed for this long (the lease keeper extends it only
   * from its next tick, a heartbeat later at most, when the lock may have run out). Unset: kept
   * as it is.
   */
  leaseMs?: number;
  logger: Logger;
  onAgentIdle: (queues: readonly string[]) => void;
  /** Called when a task was put back to wait. */
  onTaskWaiting: (queue: string) => void;
}

export interface ConnectOutcome {
  state: AgentState;
  /** Socket id of an older connection of the same agent that must be closed (`E_REPLACED`). */
  replacedSocketId?: string;
  /**
   * Sent to the new connection once it is recorded: `superseded` drops a task the sidecar
   * believes it holds; `cancelled` stops a resumed task an operator cancelled meanwhile.
   */
  cancel?: TaskCancel;
}

/**
 * Connections and disconnections of agents, as transitions of their records. A reconnect that
 * re-announces the current assignment while its lock still holds resumes it (and is told
 * `task:cancel {reason: 'cancelled'}` when an operator's cancel of the task is pending); anything
 * the sidecar holds that the hub no longer agrees with is cancelled as `superseded`.
 */
export class Presence {
  constructor(private readonly options: PresenceOptions) {}

  async connect(agentId: string, socketId: string, auth: HandshakeAuth): Promise<ConnectOutcome> {
    const { agents, hubId } = this.options;
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await agents.get(agentId);
      if (!record) throw new Error(`agent ${agentId} vanished during connect`);
      // The token was checked at the handshake; revoked or replaced since, the disconnect sent
      // to the agent's room may have gone out before this socket joined it (it has joined by now).
      if (!tokenMatches(auth.token, record.tokenHash)) {
        throw new AppError('E_UNAUTHORIZED', 'the agent token was revoked or replaced');
      }
      // and still the same when the connection is recorded: a rotation or revoke in between
      // (whose message may be lost) makes the transition fail, and the read above refuse
      const sameToken = { tokenHash: record.tokenHash ?? '' };
      const now = agents.now();
      const replacedSocketId =
        record.socketId && record.socketId !== socketId && record.state !== 'offline'
          ? record.socketId
          : undefined;
      const base = {
        socketId,
        hubId,
        queues: auth.queues.join(','),
        labels: JSON.stringify(auth.labels ?? {}),
        connectedAt: now,
        lastHeartbeatAt: now,
      };
      const idleRemove = [...new Set([...record.queues, ...auth.queues])];
      // The agent's own drain belonged to the connection that asked (its sidecar was stopping):
      // a new one starts undrained, and a sidecar still stopping asks again. An operator's stays.
      const selfDrain = record.drainedBySelf ? ['drainRequested'] : [];
      const current = auth.current;
      // claimed for a task (maybe not recorded yet: see requeue) or holding one
      const wasAssigned = record.state === 'assigned' || Boolean(record.taskId);
      const holdsTask =
        (record.state === 'assigned' || record.state === 'working') && record.taskId;

      if (
        holdsTask &&
        current &&
        current.taskId === record.taskId &&
        current.token === record.token
      ) {
        if (await this.lockHeld(record)) {
          const result = await agents.transition({
            agentId,
            from: record.state,
            to: 'working',
            version: record.version,
            reason: 'resume',
            task: record.taskId,
            expect: sameToken,
            set: { ...base, startedAt: record.startedAt ?? now },
            // a resume answers for the task as an accept does: it ends a streak of ack
            // timeouts (a field of the same HDEL, and only when a streak was counted)
            del: ['disconnectedAt', ...selfDrain, ...(record.missedAcks > 0 ? ['missedAcks'] : [])],
            idleRemove,
            index: {
              disconnected: 'remove',
              ackDeadline: 'remove',
              ...(record.taskTimeoutMs && record.state === 'assigned'
                ? { runDeadline: now + record.taskTimeoutMs }
                : {}),
            },
          });
          if (!result.ok) continue;
          this.recordServed(agentId, auth.queues);
          this.options.leases.track(agentId, {
            taskId: record.taskId ?? '',
            queue: record.taskQueue ?? '',
            token: record.token ?? '',
          });
          const resumed: ConnectOutcome = { state: 'working' };
          if (replacedSocketId) resumed.replacedSocketId = replacedSocketId;
          if (await this.cancelRequested(agentId, record.taskQueue ?? '', record.taskId ?? '')) {
            resumed.cancel = { taskId: record.taskId ?? '', reason: 'cancelled' };
          }
          return resumed;
        }
      }

      const to = restingState({
        drainRequested: record.drainRequested && !record.drainedBySelf,
        cooldownUntil: record.cooldownUntil,
        now,
      });
      // a rest that ended while the agent was away: its time and index entry go with it (the
      // sweeper ends only the rests of agents in cooldown)
      const endedRest = to !== 'cooldown' && record.cooldownUntil !== undefined;
      const result = await agents.transition({
        agentId,
        from: record.state,
        to,
        version: record.version,
        reason: 'connect',
        task: record.taskId,
        expect: sameToken,
        set: base,
        del: [
          ...(wasAssigned ? TASK_FIELDS : []),
          'disconnectedAt',
          ...selfDrain,
          ...(endedRest ? ['cooldownUntil'] : []),
        ],
        idleRemove,
        idleAdd: to === 'idle' ? auth.queues : [],
        index: {
          disconnected: 'remove',
          ackDeadline: 'remove',
          runDeadline: 'remove',
          ...(to === 'cooldown' ? { cooldown: record.cooldownUntil ?? now } : {}),
          ...(endedRest ? { cooldown: 'remove' as const } : {}),
        },
      });
      if (!result.ok) continue;
      this.recordServed(agentId, auth.queues);
      // this connection holds no task: an older one's lease on this replica is not its to extend
      this.options.leases.untrack(agentId);
      if (wasAssigned) await this.requeue(record);
      if (to === 'idle') this.options.onAgentIdle(auth.queues);
      const outcome: ConnectOutcome = { state: to };
      if (replacedSocketId) outcome.replacedSocketId = replacedSocketId;
      if (current && current.state !== 'finished') {
        outcome.cancel = { taskId: current.taskId, reason: 'superseded', token: current.token };
      }
      return outcome;
    }
    throw new Error(`agent ${agentId}: record changed too often during connect`);
  }

  /**
   * Records the queues a connection serves for `GET /v1/queues` (`QueueRegistry.serve`) once the
   * connection is recorded. Not waited for: a failure costs that listing only (until the agent
   * connects again), neither the connection nor its latency.
   */
  private recordServed(agentId: string, queues: readonly string[]): void {
    this.options.queues.serve(queues, this.options.agents.now()).catch((err: unknown) => {
      this.options.logger.warn({ agentId, err: String(err) }, 'could not record the queues served');
    });
  }

  /**
   * Records again, from its live connection, an agent whose record Redis lost (restarted empty,
   * failed over to an empty replica, flushed): the record is written only when missing, with the
   * hash of the token the connection authenticated with and the queues it serves as its allowed
   * queues, then the connection is recorded as a new one (idle). Without this the replica closed
   * the connection to resync it, and the sidecar, refused at its next handshake (unknown agent),
   * stopped for good. False when the record exists (the caller closes the connection to resync).
   */
  async restore(agentId: string, socketId: string, auth: HandshakeAuth): Promise<boolean> {
    const { redis, keys } = this.options;
    const written = await RESTORE_AGENT.run<number>(
      redis,
      [keys.agent(agentId), keys.agents, keys.agentsById],
      [agentId, hashToken(auth.token), auth.queues.join(',')],
    );
    if (written !== 1) return false;
    // the task the handshake announced is not this connection's to resume: Redis lost it
    const { current: _announced, ...fresh } = auth;
    await this.connect(agentId, socketId, fresh);
    return true;
  }

  /**
   * The connection `socketId` of the agent closed (or its replica vanished). A task holder keeps
   * its task until the lease runs out; anyone else goes offline.
   */
  async disconnect(
    agentId: string,
    socketId: string,
    reason: TransitionReason = 'disconnect',
  ): Promise<void> {
    const { agents, leases, hubId } = this.options;
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await agents.get(agentId);
      if (!record || record.socketId !== socketId) {
        // replaced or already handled: a newer connection to this replica keeps the lease it
        // tracks (a resume tracked it), one elsewhere has it extended there
        if (record?.socketId === undefined || record.hubId !== hubId) leases.untrack(agentId);
        return;
      }
      leases.untrack(agentId);
      const now = agents.now();
      const holdsTask =
        (record.state === 'assigned' || record.state === 'working') && record.taskId;
      const result = holdsTask
        ? await agents.transition({
            agentId,
            from: record.state,
            to: record.state,
            version: record.version,
            reason,
            task: record.taskId,
            set: { disconnectedAt: now },
            del: ['socketId'],
            index: { disconnected: now, ackDeadline: 'remove' },
          })
        : await agents.transition({
            agentId,
            from: record.state,
            to: 'offline',
            version: record.version,
            reason,
            del: ['socketId', ...(record.state === 'assigned' ? TASK_FIELDS : [])],
            idleRemove: record.queues,
            index: { ackDeadline: 'remove', cooldown: 'remove' },
          });
      if (result.ok || result.reason === 'missing') return;
    }
    this.options.logger.warn({ agentId }, 'could not record disconnect after retries');
  }

  /**
   * True when an operator asked to cancel the task (`cancel-requested:<queue>:<taskId>`). Read
   * after the resume is recorded: a cancel sent while the agent had no connection reached an
   * empty room, and one sent from now on reaches the new connection (it joined its room before
   * connecting).
   * A failed read is logged, not thrown: the resume is recorded, and the heartbeats of the task
   * carry the cancel too (see `AssignmentService.heartbeat`).
   */
  private async cancelRequested(agentId: string, queue: string, taskId: string): Promise<boolean> {
    try {
      const key = this.options.keys.cancelRequested(queue, taskId);
      return (await this.options.redis.exists(key)) === 1;
    } catch (err) {
      this.options.logger.warn(
        { agentId, taskId, err: String(err) },
        'could not read the cancel request of a resumed task; its heartbeats will carry it',
      );
      return false;
    }
  }

  /**
   * True when the job's BullMQ lock is still the agent's token; with `leaseMs`, the lock is then
   * renewed for a whole lease in the same script. A reconnect may come just before the lock runs
   * out, and the lease keeper of the replica it reached ticks out of step with the one that last
   * extended it: the resumed task would be lost at that first tick (the agent told to abort, the
   * job put back by the stalled checker).
   */
  async lockHeld(record: AgentRecord): Promise<boolean> {
    if (!record.taskQueue || !record.taskId || !record.token) return false;
    const key = this.options.keys.bullLock(record.taskQueue, record.taskId);
    const { leaseMs } = this.options;
    if (leaseMs !== undefined) {
      return this.options.agents.renewLock(key, record.token, leaseMs);
    }
    return (await this.options.redis.get(key)) === record.token;
  }

  /**
   * Puts the task an agent held back to wait, if its lock is still the agent's (no attempt used).
   * A record with a token but no task id was claimed by a replica that stopped between fetching
   * the job and recording it: the job is found by its lock.
   */
  async requeue(record: AgentRecord): Promise<void> {
    if (!record.taskQueue || !record.token) return;
    try {
      const taskId =
        record.taskId ?? (await this.options.agents.jobLockedBy(record.taskQueue, record.token));
      if (!taskId) return;
      const job = await this.options.queues.job(record.taskQueue, taskId);
      await job?.moveToWait(record.token);
      this.options.onTaskWaiting(record.taskQueue);
    } catch {
      // lock already gone: the stalled checker or another report has moved the job
    }
  }
}

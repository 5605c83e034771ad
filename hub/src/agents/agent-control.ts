import { AppError, type AgentState } from '@agentcom/shared';
import { TASK_FIELDS } from '../dispatch/assignments';
import type { AgentNotifier } from '../dispatch/notifier';
import { SELF_DRAIN, type AgentRecord } from '../fsm/agent-record';
import { tokenRevoked, type AgentStore, type TransitionRequest } from '../fsm/agent-store';

const MAX_CAS_RETRIES = 8;

/**
 * A drain or resume the agent asked for itself, on one of its connections: it applies only while
 * the record names that connection. A replica that handles it late (a stall) found the agent
 * connected again elsewhere, and the drain of the stopped sidecar's connection left the new one
 * `draining`, taking no task until its next reconnect.
 *
 * It is fenced by the connection's token too, as the task events are: once that token is revoked
 * or replaced (and the message that closes the connection was lost), it is refused with
 * {@link tokenRevoked} and changes nothing. A rotation or a revoke leaves the record's version as it
 * is, so the compare-and-set expects the token hash itself: one that lands between the read and
 * the write makes the write fail, and the retry's read refuses it.
 */
export interface BySelf {
  socketId: string;
  /** The hash of the token the connection authenticated with. */
  tokenHash: string;
}

/**
 * Whether the agent's own drain or resume applies to the record read: throws {@link tokenRevoked}
 * when the record's token is no longer the connection's, false when the record names another
 * connection (the call changes nothing). Always true for an operator's (no `self`).
 */
function appliesToSelf(record: AgentRecord, self: BySelf | undefined): boolean {
  if (self === undefined) return true;
  if (record.tokenHash !== self.tokenHash) throw tokenRevoked();
  return record.socketId === self.socketId;
}

/** What the compare-and-set of the agent's own drain or resume expects besides the version. */
function selfFence(self: BySelf | undefined): Pick<TransitionRequest, 'expect'> {
  return self === undefined ? {} : { expect: { tokenHash: self.tokenHash } };
}

/** Drain and undrain of an agent, asked by the agent itself or by an operator. */
export class AgentControl {
  constructor(
    private readonly agents: AgentStore,
    private readonly onAgentIdle: (queues: readonly string[]) => void,
    private readonly notifier: AgentNotifier,
    /** Puts back to wait the task a record holds, if its lock is still the agent's (`Presence`). */
    private readonly requeue: (record: AgentRecord) => Promise<void>,
  ) {}

  /**
   * Revokes the agent's token and closes its connection on every replica. Its record stays (as
   * history, with its counters); `POST /v1/agents` mints a new token.
   *
   * Before it answers, the agent goes offline: out of the idle indexes (a dispatch step no longer
   * claims it while its disconnect travels), and a task it held goes back to wait at once, no
   * attempt used. Nothing can report that task any more: the token is gone, so no connection can
   * resume it, and the old connection's reports are refused (their lock token is no longer the
   * job's). It used to wait for the lease (`LEASE_MS`, 60 s) after the revoke.
   */
  async revoke(agentId: string): Promise<void> {
    if (!(await this.agents.revokeToken(agentId))) {
      throw new AppError('E_AGENT_NOT_FOUND', `No agent ${agentId}`);
    }
    // the record has no token hash now: every connection of the agent is of an old token, but
    // not one made after it was given a new token, should this close reach a replica that late
    this.notifier.closeStaleTokenConnections(agentId, {
      code: 'E_UNAUTHORIZED',
      message: 'the agent token was revoked',
    });
    await this.retire(agentId);
  }

  /** The revoked agent's record to `offline`, freed of its task (see {@link revoke}). */
  private async retire(agentId: string): Promise<void> {
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await this.agents.get(agentId);
      // gone, or given a new token meanwhile: its connections are that token's
      if (!record || record.tokenHash !== undefined) return;
      // claimed for a task (maybe not recorded yet) or holding one
      const wasAssigned = record.state === 'assigned' || record.taskId !== undefined;
      if (record.state === 'offline' && !wasAssigned && record.socketId === undefined) return;
      const result = await this.agents.transition({
        agentId,
        from: record.state,
        to: 'offline',
        version: record.version,
        reason: 'revoked',
        task: record.taskId,
        del: ['socketId', 'disconnectedAt', ...(wasAssigned ? TASK_FIELDS : [])],
        idleRemove: record.queues,
        index: {
          disconnected: 'remove',
          ackDeadline: 'remove',
          runDeadline: 'remove',
          cooldown: 'remove',
        },
      });
      if (result.ok) {
        if (wasAssigned) await this.requeue(record);
        return;
      }
      if (result.reason === 'missing') return;
    }
    throw new AppError('E_UNAVAILABLE', 'The agent record changed too often; retry');
  }

  /**
   * After its token was replaced (`POST /v1/agents` for an existing agent): a connection made
   * with an older token is closed on every replica, so a leaked token stops working at once, not
   * at the next reconnect. Its sidecar is told why (`E_UNAUTHORIZED`) and must be given the new
   * token; a task it held returns to the queue when the lease runs out.
   *
   * Only connections whose token is no longer the record's, as each replica reads it when the
   * close reaches it: the close of a rotation that raced another, or reached a replica late, used
   * to cut the connection already made with the newest token too, and its sidecar, told
   * `E_UNAUTHORIZED`, stopped for good with a valid token. A connection is only made with a token
   * once it is written, so one whose token is the record's at that read is the newest token's.
   */
  tokenReplaced(agentId: string): void {
    this.notifier.closeStaleTokenConnections(agentId, {
      code: 'E_UNAUTHORIZED',
      message: 'the agent token was replaced',
    });
  }

  /**
   * The agent takes no new task; a running one finishes. An operator's drain lasts until it is
   * lifted; the agent's own (`self`: its sidecar is stopping) ends with the connection that
   * asked, so the sidecar takes tasks again when it is started again; one from a connection the
   * record no longer names changes nothing ({@link BySelf}).
   *
   * The agent's own drain also gives back a task pushed and not accepted yet (`assigned`): the
   * sidecar that asked takes no task from then on, so the task would wait out the ack timeout.
   * It goes back to wait before the answer, no attempt used, fenced as a revoke's is: the same
   * compare-and-set as an accept (one that came first left the record `working`, and the task
   * finishes; one that comes after is refused as superseded), then the job's lock.
   */
  async drain(agentId: string, self?: BySelf): Promise<AgentState> {
    const bySelf = self !== undefined;
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await this.agents.get(agentId);
      if (!record) throw new AppError('E_AGENT_NOT_FOUND', `No agent ${agentId}`);
      if (!appliesToSelf(record, self)) return record.state;
      // claimed for a task (maybe not recorded yet: see Presence.requeue) the sidecar won't take
      const givesBack = bySelf && record.state === 'assigned';
      const to: AgentState = record.state === 'idle' || givesBack ? 'draining' : record.state;
      // an operator's drain stays one when the sidecar drains too
      const operatorsDrain = record.drainRequested && !record.drainedBySelf;
      const result = await this.agents.transition({
        agentId,
        from: record.state,
        to,
        version: record.version,
        ...selfFence(self),
        reason: 'drain',
        set: { drainRequested: bySelf && !operatorsDrain ? SELF_DRAIN : '1' },
        idleRemove: record.queues,
        ...(givesBack
          ? { task: record.taskId, del: TASK_FIELDS, index: { ackDeadline: 'remove' as const } }
          : {}),
      });
      if (result.ok) {
        if (givesBack) await this.requeue(record);
        return to;
      }
    }
    throw new AppError('E_UNAVAILABLE', 'The agent record changed too often; retry');
  }

  /**
   * Lifts a drain (a draining agent becomes idle again). An operator's resume also ends a streak
   * of ack timeouts (`missedAcks`): the operator vouches for the agent, so the rest the streak
   * started ends too (an agent in `cooldown` becomes idle at once; an offline one reconnects
   * idle). A cooldown the agent reported itself (a rate limit: no streak) is left to run out: the
   * agent said it cannot take work until then.
   *
   * The agent's own resume (`self`: `agent:resume`) lifts only the drain it asked for itself, on
   * the connection the record names ({@link BySelf}):
   * an operator's drain is refused (`E_FORBIDDEN`), and an ack-timeout rest and its count stay
   * (an agent cannot vouch for itself, or resuming would be a way out of the rest).
   */
  async undrain(agentId: string, self?: BySelf): Promise<AgentState> {
    const bySelf = self !== undefined;
    for (let i = 0; i < MAX_CAS_RETRIES; i++) {
      const record = await this.agents.get(agentId);
      if (!record) throw new AppError('E_AGENT_NOT_FOUND', `No agent ${agentId}`);
      if (!appliesToSelf(record, self)) return record.state;
      if (bySelf && record.drainRequested && !record.drainedBySelf) {
        throw new AppError(
          'E_FORBIDDEN',
          `Agent ${agentId} was drained by an operator: only an operator resumes it`,
        );
      }
      if (bySelf && !record.drainRequested) return record.state;
      // the rest may hold a rate limit reported earlier too (the sweeper keeps the later end):
      // the operator's word ends it all the same
      const endsStreak = !bySelf && record.missedAcks > 0;
      const endsRest = endsStreak && record.cooldownUntil !== undefined;
      // idle, not the resting state of the record: the drain is lifted by this very transition
      const to: AgentState =
        record.state === 'draining' || (record.state === 'cooldown' && endsRest)
          ? 'idle'
          : record.state;
      const result = await this.agents.transition({
        agentId,
        from: record.state,
        to,
        version: record.version,
        ...selfFence(self),
        reason: bySelf ? 'undrain_self' : 'undrain',
        del: [
          'drainRequested',
          ...(endsStreak ? ['missedAcks'] : []),
          ...(endsRest ? ['cooldownUntil'] : []),
        ],
        idleAdd: to === 'idle' ? record.queues : [],
        ...(endsRest ? { index: { cooldown: 'remove' as const } } : {}),
      });
      if (result.ok) {
        if (to === 'idle') this.onAgentIdle(record.queues);
        return to;
      }
    }
    throw new AppError('E_UNAVAILABLE', 'The agent record changed too often; retry');
  }
}

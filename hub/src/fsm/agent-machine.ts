import type { AgentState } from '@agentcom/shared';

/**
 * The agent state machine as a pure table. Each agent's record lives in Redis and changes only
 * through {@link AgentStore.transition}, which consults this table first and then lets a Lua
 * compare-and-set apply the change atomically. States are documented in shared
 * (`domain/agent-state.ts`); the reasons below name why a transition happened and are what the
 * events stream and the dashboard show.
 */
export const TRANSITION_REASONS = [
  'connect', // a sidecar connected (or replaced its own older connection)
  'resume', // a sidecar reconnected within the lease and re-announced its task
  'claim', // a dispatcher claimed the idle agent and has no task for it yet (Lua claimIdle)
  'assign', // the agent got a task (idle -> assigned in one dispatch step, or after a claim)
  'release', // the claimed agent got no task after all
  'accept', // the sidecar accepted the pushed task
  'ack_timeout', // the sidecar did not accept in time: task back to wait, agent to cooldown
  'complete', // the task completed
  'fail', // the attempt failed
  'rate_limited', // the agent reported a rate limit: cooldown, task back to wait
  'cooldown_over', // the cooldown ended
  'drain', // operator or agent asked to drain
  'undrain', // an operator resumed the agent: lifts any drain, ends an ack-timeout rest
  'undrain_self', // the agent lifted the drain it asked for itself (agent:resume)
  'disconnect', // the connection closed
  'lease_expired', // a disconnected agent did not come back within the lease
  'lease_lost', // the task's lock was lost while the agent was connected
  'not_held', // the agent's heartbeats say it holds no task: the task went back to wait
  'timeout', // the task ran past its run timeout; the agent was told to stop it
  'replica_gone', // the replica holding the connection stopped refreshing its liveness
  'revoked', // the agent's token was revoked
] as const;
export type TransitionReason = (typeof TRANSITION_REASONS)[number];

/** Legal moves: `from → to`. Self-loops change fields (socket, task, flags) without a state change. */
export const AGENT_TRANSITIONS: Readonly<Record<AgentState, readonly AgentState[]>> = {
  offline: ['idle', 'working', 'cooldown', 'draining', 'offline'],
  idle: ['assigned', 'draining', 'offline', 'idle'],
  // cooldown: a rate limit reported before the accept (a client may refuse a task it cannot run),
  // or an ack timeout (the task goes to another agent while this one rests)
  assigned: ['assigned', 'working', 'idle', 'cooldown', 'draining', 'offline'],
  working: ['working', 'idle', 'cooldown', 'draining', 'offline'],
  draining: ['draining', 'idle', 'offline'],
  cooldown: ['cooldown', 'idle', 'draining', 'offline'],
};

export function canTransition(from: AgentState, to: AgentState): boolean {
  return AGENT_TRANSITIONS[from].includes(to);
}

/** States in which the agent holds a task (its record carries taskId, taskQueue and token). */
export const TASK_HOLDING_STATES: readonly AgentState[] = ['assigned', 'working'];

/** The state an agent with a live connection goes to when it holds no task. */
export function restingState(flags: {
  drainRequested: boolean;
  cooldownUntil: number | undefined;
  now: number;
}): 'idle' | 'draining' | 'cooldown' {
  if (flags.cooldownUntil !== undefined && flags.cooldownUntil > flags.now) return 'cooldown';
  if (flags.drainRequested) return 'draining';
  return 'idle';
}

/**
 * How long an agent rests in cooldown after its `missedAcks`-th ack timeout in a row (the record's
 * `missedAcks`, counted by the sweeper, reset by an accept): one ack timeout, twice as long at
 * each further miss, at most `maxMs` but never less than one ack timeout. A silent agent (a
 * wedged sidecar: connected, heartbeating, never accepting) otherwise takes a task, and delays
 * it by an ack timeout, every two ack timeouts for ever.
 */
export function ackTimeoutCooldownMs(
  missedAcks: number,
  ackTimeoutMs: number,
  maxMs: number,
): number {
  const doublings = Math.min(Math.max(missedAcks - 1, 0), 30); // 2^30 ack timeouts: past any cap
  return Math.min(ackTimeoutMs * 2 ** doublings, Math.max(maxMs, ackTimeoutMs));
}

import { Redis } from 'ioredis';
import { RedisKeys } from '../../hub/src/redis/keys';
import { parseTransitionEntry, type UiTransition } from '../../hub/src/ui/ui-events';

/** One agent transition as the events stream records it (the agents page reads the same). */
export type TransitionEvent = UiTransition;

export async function readTransitions(
  redisUrl: string,
  prefix: string,
): Promise<TransitionEvent[]> {
  const redis = new Redis(redisUrl);
  try {
    const entries = await redis.xrange(new RedisKeys(prefix).events, '-', '+');
    return entries.map(([id, fields]) => parseTransitionEntry(id, fields));
  } finally {
    redis.disconnect();
  }
}

/**
 * Replays the transition stream per agent and returns every violation of "one task per agent at
 * a time": an `assign` while the agent still held a task.
 */
export function doubleHoldings(events: TransitionEvent[]): string[] {
  const holding = new Map<string, string>();
  const violations: string[] = [];
  const releasing = new Set([
    'complete',
    'fail',
    'rate_limited',
    'ack_timeout',
    'lease_expired',
    'lease_lost',
    'not_held',
    'connect',
    'revoked',
  ]);
  for (const event of events) {
    if (event.reason === 'assign') {
      const held = holding.get(event.agent);
      if (held) violations.push(`${event.agent} got ${event.task} while holding ${held}`);
      holding.set(event.agent, event.task);
    } else if (
      releasing.has(event.reason) &&
      (event.task === '' || holding.get(event.agent) === event.task)
    ) {
      holding.delete(event.agent);
    } else if (event.to === 'offline' || event.to === 'idle') {
      holding.delete(event.agent);
    }
  }
  return violations;
}

/** Completions per task id, from the `complete` transitions. */
export function completionsByTask(events: TransitionEvent[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const event of events) {
    if (event.reason === 'complete') counts.set(event.task, (counts.get(event.task) ?? 0) + 1);
  }
  return counts;
}

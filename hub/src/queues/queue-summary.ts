import type { Redis } from 'ioredis';
import type { AgentStore } from '../fsm/agent-store';
import type { RedisKeys } from '../redis/keys';
import type { QueueRegistry } from './queue-registry';

export interface QueueSummary {
  name: string;
  counts: Record<string, number>;
  idleAgents: number;
}

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

/**
 * `GET /v1/queues`: task counts by BullMQ state and idle agents, for every queue tasks were added
 * to and every queue a connected agent serves (those without a task show zero counts and open
 * nothing: see `QueueRegistry.holdsTasks`).
 */
export async function summarizeQueues(deps: {
  redis: Redis;
  keys: RedisKeys;
  queues: QueueRegistry;
  agents: AgentStore;
}): Promise<QueueSummary[]> {
  const known = await deps.queues.discover();
  const served = (await deps.agents.getMany(await deps.agents.listIds()))
    .filter((record) => record.state !== 'offline')
    .flatMap((record) => record.queues);
  const names = [...new Set([...known, ...served])].sort();
  return Promise.all(
    names.map(async (name) => {
      const counts = (await deps.queues.holdsTasks(name))
        ? await (await deps.queues.get(name)).queue.getJobCounts(...STATES)
        : Object.fromEntries(STATES.map((state) => [state, 0]));
      const idleAgents = await deps.redis.zcard(deps.keys.idle(name));
      return { name, counts, idleAgents };
    }),
  );
}

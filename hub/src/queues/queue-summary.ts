import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';
import type { QueueRegistry } from './queue-registry';

export interface QueueSummary {
  name: string;
  counts: Record<string, number>;
  idleAgents: number;
}

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

/** `GET /v1/queues`: task counts by BullMQ state and idle agents, for every known queue. */
export async function summarizeQueues(deps: {
  redis: Redis;
  keys: RedisKeys;
  queues: QueueRegistry;
}): Promise<QueueSummary[]> {
  const names = (await deps.queues.discover()).sort();
  return Promise.all(
    names.map(async (name) => {
      const handle = await deps.queues.get(name);
      const counts = await handle.queue.getJobCounts(...STATES);
      const idleAgents = await deps.redis.zcard(deps.keys.idle(name));
      return { name, counts, idleAgents };
    }),
  );
}

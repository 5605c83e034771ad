import type { Redis } from 'ioredis';
import type { AgentRecord } from '../fsm/agent-record';
import type { AgentStore } from '../fsm/agent-store';
import type { RedisKeys } from '../redis/keys';
import type { QueueRegistry } from './queue-registry';

export interface QueueSummary {
  name: string;
  counts: Record<string, number>;
  idleAgents: number;
}

export interface QueueSummaryDeps {
  redis: Redis;
  keys: RedisKeys;
  queues: QueueRegistry;
  agents: AgentStore;
}

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

/**
 * `GET /v1/queues`: task counts by BullMQ state and idle agents, for every queue tasks were added
 * to and every queue a connected agent serves (those without a task show zero counts and open
 * nothing: see `QueueRegistry.holdsTasks`). `records`: every agent record, when the caller has
 * read them already (the agents page's snapshot); read here otherwise.
 */
export async function summarizeQueues(
  deps: QueueSummaryDeps,
  records?: readonly AgentRecord[],
): Promise<QueueSummary[]> {
  const known = await deps.queues.discover();
  const served = (records ?? (await deps.agents.getMany(await deps.agents.listIds())))
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

/** The counts of {@link summarizeQueues} by queue name, as the agents page shows them. */
export async function countsByQueue(
  deps: QueueSummaryDeps,
  records: readonly AgentRecord[],
): Promise<Record<string, Record<string, number>>> {
  const summaries = await summarizeQueues(deps, records);
  return Object.fromEntries(summaries.map((summary) => [summary.name, summary.counts]));
}

import type { Redis } from 'ioredis';
import { toAgentView, type AgentRecord } from '../fsm/agent-record';
import type { AgentStore } from '../fsm/agent-store';
import type { Logger } from '../logger';
import type { RedisKeys } from '../redis/keys';
import { parseTransitionEntry, type QueueCounts, type UiSnapshot } from './ui-events';

/**
 * BullMQ counts per queue name (e.g. waiting, active, completed, failed), given every agent
 * record as the snapshot read them (so that they are read once per snapshot).
 */
export type QueueCountsSource = (
  records: readonly AgentRecord[],
) => Promise<Record<string, QueueCounts>>;

export interface SnapshotReaderOptions {
  redis: Redis;
  keys: RedisKeys;
  agents: AgentStore;
  hubId: string;
  logger: Logger;
  queueCounts: QueueCountsSource;
  /** How many of the latest transitions a snapshot carries. Default 50. */
  eventCount?: number;
}

/** Reads what the page shows: agents, queues with their counts, the latest transitions. */
export function createSnapshotReader(options: SnapshotReaderOptions): () => Promise<UiSnapshot> {
  const { redis, keys, agents, hubId, logger, queueCounts } = options;
  const eventCount = options.eventCount ?? 50;

  const countsOrNothing = async (
    records: readonly AgentRecord[],
  ): Promise<Record<string, QueueCounts>> => {
    try {
      return await queueCounts(records);
    } catch (err) {
      logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'ui: queue counts');
      return {};
    }
  };

  return async () => {
    const reading = agents.listIds().then((ids) => agents.getMany(ids));
    const [records, names, counts, entries] = await Promise.all([
      reading,
      redis.smembers(keys.queues),
      reading.then(countsOrNothing),
      redis.xrevrange(keys.events, '+', '-', 'COUNT', eventCount),
    ]);
    const views = records.map(toAgentView);
    const queues: Record<string, QueueCounts> = {};
    const all = new Set([...names, ...Object.keys(counts), ...views.flatMap((v) => v.queues)]);
    // own counts only: `counts.constructor` of a queue without counts is Object's constructor
    for (const name of [...all].sort())
      queues[name] = Object.hasOwn(counts, name) ? counts[name]! : {};
    return {
      hubId,
      serverTime: agents.now(), // the records' clock (Redis's)
      agents: views,
      queues,
      events: entries.map(([id, fields]) => parseTransitionEntry(id, fields)),
    };
  };
}

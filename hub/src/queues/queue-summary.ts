import type { Redis } from 'ioredis';
import type { AgentRecord } from '../fsm/agent-record';
import type { AgentStore } from '../fsm/agent-store';
import type { RedisKeys } from '../redis/keys';
import { pipelineReply } from '../redis/pipeline-reply';
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

/**
 * `GET /v1/queues`: task counts by BullMQ state and idle agents, for every queue tasks were added
 * to and every queue a connected agent serves or served (those without a task show zero counts
 * and open nothing: see `QueueRegistry.holdsTasks`). Reads no agent record (the served queues
 * are recorded as agents connect: `QueueRegistry.serve`) and costs two round trips whatever the
 * number of queues: the names, then every count, pipelined. `records`: every agent record, when
 * the caller has read them already (the agents page's snapshot): the queues the connected ones
 * serve are listed then, rather than every queue an agent served.
 */
export async function summarizeQueues(
  deps: QueueSummaryDeps,
  records?: readonly AgentRecord[],
): Promise<QueueSummary[]> {
  const { withTasks, served } = await deps.queues.listedNames();
  const names = [...new Set([...withTasks, ...(records ? servedBy(records) : served)])].sort();
  if (names.length === 0) return [];
  const idle = deps.redis.pipeline();
  for (const name of names) idle.zcard(deps.keys.idle(name));
  const [counts, idleReplies] = await Promise.all([deps.queues.jobCounts(names), idle.exec()]);
  return names.map((name, i) => ({
    name,
    counts: counts[i] ?? {},
    idleAgents: pipelineReply<number>(idleReplies, i) ?? 0,
  }));
}

/**
 * Records the queues connected agents serve, from their records, when no replica has recorded
 * any: a Redis written by a version before `QueueRegistry.serve`, whose agents connected without
 * recording theirs. Run as the replica starts; reads every agent record then, never again once
 * the set exists.
 */
export async function backfillServedQueues(deps: QueueSummaryDeps): Promise<void> {
  if (await deps.queues.servedRecorded()) return;
  const records = await deps.agents.getMany(await deps.agents.listIds());
  await deps.queues.serve([...new Set(servedBy(records))], deps.agents.now());
}

/** The queues the connected agents among `records` serve. */
function servedBy(records: readonly AgentRecord[]): string[] {
  return records.filter((record) => record.state !== 'offline').flatMap((record) => record.queues);
}

/** The counts of {@link summarizeQueues} by queue name, as the agents page shows them. */
export async function countsByQueue(
  deps: QueueSummaryDeps,
  records: readonly AgentRecord[],
): Promise<Record<string, Record<string, number>>> {
  const summaries = await summarizeQueues(deps, records);
  return Object.fromEntries(summaries.map((summary) => [summary.name, summary.counts]));
}

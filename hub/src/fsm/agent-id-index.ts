import type { Redis } from 'ioredis';
import type { RedisKeys } from '../redis/keys';

/**
 * The agent id index (`keys.agentsById`): every agent id in a sorted set, all scored 0, so that
 * ZRANGEBYLEX reads the ids after any id, in id order, in O(log N + page). The agents set
 * (`keys.agents`) can only be read whole (SMEMBERS, then a sort), which made every page of the
 * agents listing cost every agent.
 *
 * The index mirrors the set, and agents are never removed from either (a revoke keeps the
 * record): `AgentStore.register` (`registerAgent.lua`) and `restoreAgent.lua` (an agent whose
 * record Redis lost, put back from its live connection) add to both in one script. Whatever adds
 * to the set alone leaves the index short: a Redis written by a version without the index, a
 * replica of that version still registering agents during a rolling upgrade. A page read counts both, in the MULTI that reads it, and mends a short
 * index before it answers ({@link backfillAgentIdIndex}), so no migration has to run first.
 */

/** Set members copied into the index per SSCAN step (and ZADD). */
const BACKFILL_BATCH = 1000;

/** Ids of one page, in id order, and whether more ids follow the last one. */
export interface AgentIdPage {
  ids: string[];
  more: boolean;
}

/** Up to `limit` agent ids after `after` (from the first without), in id order. */
export async function readAgentIdPage(
  redis: Redis,
  keys: RedisKeys,
  after: string | undefined,
  limit: number,
): Promise<AgentIdPage> {
  let page = await readCounted(redis, keys, after, limit);
  if (page.setSize > page.indexSize) {
    await backfillAgentIdIndex(redis, keys);
    page = await readCounted(redis, keys, after, limit);
  }
  return { ids: page.ids.slice(0, limit), more: page.ids.length > limit };
}

/** One more id than asked for (is there a next page?) and both sizes, read at one instant. */
async function readCounted(
  redis: Redis,
  keys: RedisKeys,
  after: string | undefined,
  limit: number,
): Promise<{ ids: string[]; setSize: number; indexSize: number }> {
  const replies = await redis
    .multi()
    .scard(keys.agents)
    .zcard(keys.agentsById)
    .zrangebylex(
      keys.agentsById,
      after === undefined ? '-' : `(${after}`,
      '+',
      'LIMIT',
      0,
      limit + 1,
    )
    .exec();
  const values = (replies ?? []).map(([err, value]) => {
    if (err) throw err;
    return value;
  });
  const [setSize, indexSize, ids] = values as [number, number, string[]];
  return { ids, setSize, indexSize };
}

/**
 * Adds every member of the agents set to the index (an SSCAN, so Redis is never held for the
 * whole set). Adding an id the index holds changes nothing, so replicas mending it at once, or
 * agents registered meanwhile, do no harm; returns how many ids were added.
 */
export async function backfillAgentIdIndex(redis: Redis, keys: RedisKeys): Promise<number> {
  let added = 0;
  let cursor = '0';
  do {
    const [next, ids] = await redis.sscan(keys.agents, cursor, 'COUNT', BACKFILL_BATCH);
    if (ids.length > 0) {
      added += await redis.zadd(keys.agentsById, 'NX', ...ids.flatMap((id) => [0, id]));
    }
    cursor = next;
  } while (cursor !== '0');
  return added;
}

import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** One key as a snapshot sees it: its type and a hash of its content (TTL not included). */
export interface KeyState {
  type: string;
  hash: string;
  /** Short human description: `hash 21 fields`, `zset 3 members`, ... */
  summary: string;
}

export interface SnapshotOptions {
  /** Keys left out altogether (each with its reason, listed by the test). */
  exclude?: (key: string) => boolean;
  /** Sorted sets compared by members only: their scores legitimately move with time. */
  membersOnly?: (key: string) => boolean;
}

const sha = (parts: readonly string[]): string => {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(`${part.length}:${part}`);
  return hash.digest('hex');
};

/**
 * Every key of the database (`SCAN`, bounded by the key count) with its type and a content hash
 * from type-specific reads: strings by value, hashes and sets sorted, lists and streams in order,
 * sorted sets with their scores (or members only).
 */
export async function snapshotRedis(
  redis: Redis,
  options: SnapshotOptions = {},
): Promise<Map<string, KeyState>> {
  const keys = new Set<string>();
  let cursor = '0';
  const maxRounds = 100_000;
  for (let round = 0; round < maxRounds; round++) {
    const [next, batch] = await redis.scan(cursor, 'COUNT', 1000);
    for (const key of batch) keys.add(key);
    cursor = next;
    if (cursor === '0') break;
  }
  const snapshot = new Map<string, KeyState>();
  for (const key of [...keys].sort()) {
    if (options.exclude?.(key)) continue;
    const state = await readKey(redis, key, options.membersOnly?.(key) ?? false);
    if (state) snapshot.set(key, state);
  }
  return snapshot;
}

async function readKey(
  redis: Redis,
  key: string,
  membersOnly: boolean,
): Promise<KeyState | undefined> {
  const type = await redis.type(key);
  switch (type) {
    case 'none':
      return undefined; // expired between SCAN and TYPE
    case 'string': {
      const value = (await redis.getBuffer(key)) ?? Buffer.alloc(0);
      return {
        type,
        hash: sha([value.toString('base64')]),
        summary: `string ${value.length} bytes`,
      };
    }
    case 'hash': {
      const fields = await redis.hgetall(key);
      const entries = Object.entries(fields).sort(([a], [b]) => a.localeCompare(b));
      return {
        type,
        hash: sha(entries.flat()),
        summary: `hash ${entries.length} fields`,
      };
    }
    case 'list': {
      const items = await redis.lrange(key, 0, -1);
      return { type, hash: sha(items), summary: `list ${items.length} items` };
    }
    case 'set': {
      const members = (await redis.smembers(key)).sort();
      return { type, hash: sha(members), summary: `set ${members.length} members` };
    }
    case 'zset': {
      const flat = await redis.zrange(key, '0', '-1', 'WITHSCORES');
      const parts = membersOnly ? flat.filter((_, i) => i % 2 === 0).sort() : flat;
      return {
        type,
        hash: sha(parts),
        summary: `zset ${flat.length / 2} members${membersOnly ? ' (scores ignored)' : ''}`,
      };
    }
    case 'stream': {
      const entries = await redis.xrange(key, '-', '+');
      const parts = entries.flatMap(([id, fields]) => [id, ...fields]);
      return { type, hash: sha(parts), summary: `stream ${entries.length} entries` };
    }
    default: {
      const dump = await redis.dumpBuffer(key);
      return { type, hash: sha([dump?.toString('base64') ?? '']), summary: type };
    }
  }
}

/** The differences between two snapshots, one line per key: added, removed or changed. */
export function diffSnapshots(
  before: Map<string, KeyState>,
  after: Map<string, KeyState>,
): string[] {
  const changes: string[] = [];
  for (const [key, state] of after) {
    const old = before.get(key);
    if (!old) changes.push(`added ${key} (${state.summary})`);
    else if (old.type !== state.type || old.hash !== state.hash) {
      changes.push(`changed ${key} (${old.summary} → ${state.summary})`);
    }
  }
  for (const [key, state] of before) {
    if (!after.has(key)) changes.push(`removed ${key} (${state.summary})`);
  }
  return changes.sort();
}

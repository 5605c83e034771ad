import type { Redis } from 'ioredis';
import type { AgentStore } from '../../hub/src/fsm/agent-store';
import type { Logger } from '../../hub/src/logger';
import { QueueRegistry } from '../../hub/src/queues/queue-registry';
import type { RedisKeys } from '../../hub/src/redis/keys';

/**
 * A replica's queue registry for a test of one part against a real Redis: a job's lock outlives
 * the test, and no stalled check runs within it.
 */
export function testQueueRegistry(
  connection: Redis,
  keys: RedisKeys,
  logger: Logger,
): QueueRegistry {
  return new QueueRegistry({
    connection,
    keys,
    leaseMs: 60_000,
    stalledIntervalMs: 60_000,
    maxStalledCount: 1,
    logger,
    onWaiting: () => undefined,
  });
}

/** Registers `agentId` and connects it to `hubId`, idle in `queues` (as a handshake does). */
export async function connectIdleAgent(
  store: AgentStore,
  agentId: string,
  queues: readonly string[],
  hubId = 'hub-a',
): Promise<void> {
  await store.register(agentId, 'h'.repeat(64));
  const connected = await store.transition({
    agentId,
    from: 'offline',
    to: 'idle',
    reason: 'connect',
    set: { queues: queues.join(','), socketId: `s-${agentId}`, hubId },
    idleAdd: [...queues],
  });
  if (!connected.ok)
    throw new Error(`agent ${agentId} not connected: ${JSON.stringify(connected)}`);
}

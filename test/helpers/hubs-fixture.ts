import type { Hub } from '../../hub/src/hub';
import { startRedis, type RedisProcess } from './redis-server';
import type { TestAgent } from './test-agent';

export interface HubsFixture {
  /** The describe block's private Redis (started before its tests). */
  readonly redis: RedisProcess;
  /** The hubs and agents a test started: closed after it. */
  readonly hubs: Array<Hub & { url: string }>;
  readonly agents: TestAgent[];
}

/**
 * A private Redis for the enclosing describe block, and lists of the hubs and agents its tests
 * start, closed after each test.
 */
export function useHubsFixture(): HubsFixture {
  let redis: RedisProcess | undefined;
  const hubs: Array<Hub & { url: string }> = [];
  const agents: TestAgent[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    for (const agent of agents.splice(0)) agent.close();
    for (const hub of hubs.splice(0)) await hub.close();
  });
  afterAll(async () => {
    await redis?.dispose();
  });
  return {
    get redis(): RedisProcess {
      if (!redis) throw new Error('the fixture Redis starts in beforeAll');
      return redis;
    },
    hubs,
    agents,
  };
}

import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startTestHub } from './hub';
import { startRedis, type RedisProcess } from './redis-server';
import type { TestAgent } from './test-agent';

export type TestHub = Awaited<ReturnType<typeof startTestHub>>;

export interface TestHubOptions<HubIds extends readonly string[]> {
  /** One in-process replica per `HUB_ID`, all on one prefix; by default one, with its own id. */
  hubIds?: HubIds;
  /** Settings of every replica, over the fast test timings. */
  env?: Record<string, string>;
  /**
   * Closes what the tests opened against the hubs beyond `agents` (browsers, raw sockets), before
   * the hubs close: a replica closing under live connections is not what these tests are about.
   */
  beforeClose?: () => void | Promise<void>;
}

export interface TestHubFixture<HubIds extends readonly string[]> {
  /** The describe block's private Redis. */
  readonly redis: RedisProcess;
  /** The first replica (the only one, unless `hubIds` names more). */
  readonly hub: TestHub;
  /** The replicas in the order of `hubIds`. */
  readonly hubs: { readonly [I in keyof HubIds]: TestHub };
  /** The agents a test registered: closed after each test. */
  readonly agents: TestAgent[];
  /** A plain client of the Redis, opened on first use, closed with the rest. */
  readonly admin: Redis;
}

/**
 * A private Redis and in-process hub replicas on it for the enclosing describe block, started
 * before its tests (in `beforeAll`: the fields throw until then) and closed after them; the
 * agents a test pushes to `agents` are closed after that test.
 */
export function useTestHub<const HubIds extends readonly string[] = readonly ['hub']>(
  options: TestHubOptions<HubIds> = {},
): TestHubFixture<HubIds> {
  let redis: RedisProcess | undefined;
  let admin: Redis | undefined;
  const hubs: TestHub[] = [];
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    // one prefix, so that the replicas share their queues and agents
    const prefix = `t${randomBytes(3).toString('hex')}`;
    const hubIds: ReadonlyArray<string | undefined> = options.hubIds ?? [undefined];
    for (const hubId of hubIds) {
      const env = { AGENTCOM_PREFIX: prefix, ...(hubId ? { HUB_ID: hubId } : {}), ...options.env };
      hubs.push(await startTestHub(redis.url, env));
    }
  });
  afterEach(() => {
    for (const agent of agents.splice(0)) agent.close();
  });
  afterAll(async () => {
    await options.beforeClose?.();
    admin?.disconnect();
    for (const hub of hubs.splice(0)) await hub.close();
    await redis?.dispose();
  });

  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the test hub starts in beforeAll');
    return value;
  };
  return {
    get redis() {
      return started(redis);
    },
    get hub() {
      return started(hubs[0]);
    },
    get hubs() {
      started(hubs[0]);
      // one replica per id was started, in their order
      return hubs as unknown as TestHubFixture<HubIds>['hubs'];
    },
    agents,
    get admin() {
      admin ??= new Redis(started(redis).url);
      return admin;
    },
  };
}

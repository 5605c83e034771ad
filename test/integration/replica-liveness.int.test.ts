import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { RedisKeys } from '../../hub/src/redis/keys';
import { eventually, startTestHub } from '../helpers/hub';
import { startHubProcess, type HubProcess } from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

const PREFIX = 'liveness';
const HEARTBEAT_MS = 1000;
/** Long socket pings: the agent's connection to the frozen replica must outlive its freeze. */
const TIMINGS = {
  HEARTBEAT_MS: String(HEARTBEAT_MS),
  PING_INTERVAL_MS: '20000',
  PING_TIMEOUT_MS: '20000',
};

/**
 * After a Redis outage longer than three heartbeats, no replica could refresh its liveness, and
 * they reconnect one after another: the first one back must not take the others for gone (and
 * disconnect their agents as `replica_gone`) before they had the time to refresh.
 */
describe('replica liveness across a Redis outage', () => {
  let redis: RedisProcess;
  let admin: Redis;
  let first: Hub & { url: string };
  let late: HubProcess;
  let agent: TestAgent;
  const keys = new RedisKeys(PREFIX);

  beforeAll(async () => {
    redis = await startRedis({ appendonly: true });
    admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    first = await startTestHub(redis.url, { AGENTCOM_PREFIX: PREFIX, HUB_ID: 'first', ...TIMINGS });
    late = await startHubProcess(redis.url, PREFIX, 'late', TIMINGS);
    agent = await TestAgent.register(late.url, 'agent-on-late', ['q']);
  });
  afterAll(async () => {
    agent.close();
    late.child.kill('SIGCONT');
    await late.kill('SIGTERM');
    await first.close();
    admin.disconnect();
    await redis.dispose();
  });

  const record = () => admin.hgetall(keys.agent('agent-on-late'));

  it('a replica that reconnects later keeps its agents', async () => {
    const before = await eventually(
      async () => {
        const seen = await record();
        return seen.state === 'idle' ? seen : undefined;
      },
      { what: 'the agent recorded idle on the late replica' },
    );
    expect(before).toMatchObject({ hubId: 'late' });

    // `late` reconnects after `first`: frozen for the outage and a while after it
    late.child.kill('SIGSTOP');
    await redis.stop('SIGKILL');
    // the outage: longer than three heartbeats, so every liveness entry is stale when Redis returns
    await new Promise((resolve) => setTimeout(resolve, 3.5 * HEARTBEAT_MS));
    await redis.restart();
    await eventually(
      async () => ((await fetch(`${first.url}/readyz`)).status === 200 ? true : undefined),
      {
        what: 'the first replica back',
      },
    );
    // `first` sweeps every 200 ms meanwhile; the property is that none of its sweeps takes `late`
    // (silent since before the outage) for gone while `late` could not yet have refreshed
    await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS));
    late.child.kill('SIGCONT');

    const since = Date.now();
    await eventually(
      async () => {
        const score = await admin.zscore(keys.replicas, 'late');
        return score !== null && Number(score) >= since - 100 ? true : undefined;
      },
      { what: 'the late replica refreshed its liveness' },
    );
    expect(await record()).toMatchObject({
      state: 'idle',
      hubId: 'late',
      socketId: before.socketId,
    });
  });
});

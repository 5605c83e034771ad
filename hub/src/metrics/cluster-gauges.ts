import { Gauge, Registry } from 'prom-client';
import type { Redis } from 'ioredis';
import { AGENT_STATES } from '@agentcom/shared';
import type { AgentStore } from '../fsm/agent-store';
import type { QueueRegistry } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';

const LEADER_TTL_MS = 30_000;
const QUEUE_STATES = [
  'waiting',
  'prioritized',
  'delayed',
  'active',
  'completed',
  'failed',
] as const;

/**
 * Cluster-wide gauges read from Redis: agents by state, tasks by queue and state. Only the
 * metrics leader exports them (a Redis lease any replica can take when it lapses), so scraping all
 * replicas and summing never counts them twice. Query them with `max without (hub)` or `sum`.
 */
export class ClusterGauges {
  private readonly registry = new Registry();

  constructor(
    private readonly options: {
      redis: Redis;
      keys: RedisKeys;
      hubId: string;
      agents: AgentStore;
      queues: QueueRegistry;
    },
  ) {
    const { agents, queues } = options;
    new Gauge({
      name: 'agentcom_agents',
      help: 'Agents by state, cluster-wide (exported by the metrics leader only)',
      labelNames: ['state'] as const,
      registers: [this.registry],
      async collect() {
        const counts = Object.fromEntries(AGENT_STATES.map((s) => [s, 0])) as Record<
          string,
          number
        >;
        for (const record of await agents.getMany(await agents.listIds())) {
          counts[record.state] = (counts[record.state] ?? 0) + 1;
        }
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'agentcom_queue_tasks',
      help: 'Tasks by queue and BullMQ state, cluster-wide (exported by the metrics leader only)',
      labelNames: ['queue', 'state'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const name of await queues.discover()) {
          const handle = await queues.get(name);
          const counts = await handle.queue.getJobCounts(...QUEUE_STATES);
          for (const state of QUEUE_STATES) this.set({ queue: name, state }, counts[state] ?? 0);
        }
      },
    });
  }

  /** True when this replica holds (or just took) the metrics lease. */
  async isLeader(): Promise<boolean> {
    const { redis, keys, hubId } = this.options;
    const taken = await redis.set(keys.metricsLeader, hubId, 'PX', LEADER_TTL_MS, 'NX');
    if (taken === 'OK') return true;
    if ((await redis.get(keys.metricsLeader)) !== hubId) return false;
    await redis.pexpire(keys.metricsLeader, LEADER_TTL_MS);
    return true;
  }

  /** The gauges' exposition text, or '' when another replica is the leader. */
  async render(): Promise<string> {
    return (await this.isLeader()) ? this.registry.metrics() : '';
  }
}

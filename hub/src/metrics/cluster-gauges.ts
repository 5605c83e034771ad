import { Gauge, Registry } from 'prom-client';
import type { Redis } from 'ioredis';
import { AGENT_STATES, isAgentState } from '@agentcom/shared';
import type { QueueRegistry } from '../queues/queue-registry';
import type { RedisKeys } from '../redis/keys';
import type { AgentScripts } from '../redis/scripts';

/** Default lifetime of the metrics lease (`METRICS_LEADER_TTL_MS`); the leader renews it every third of it. */
const LEADER_TTL_MS = 30_000;
/** Agents whose state one pipelined read of the agents gauge asks for. */
const STATES_PER_READ = 200;
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
 *
 * Every replica runs a timer of its own (a third of the lease's TTL): the leader extends its
 * lease, the others take it once it lapsed. Renewing on scrapes alone let the lease lapse whenever
 * Prometheus scraped less often than the TTL (its default is 60 s), and the next replica scraped
 * took over while the old leader's series were still live: both exported them.
 */
export class ClusterGauges {
  private readonly registry = new Registry();
  private readonly ttlMs: number;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<boolean> | undefined;
  private rendering: Promise<string> | undefined;
  private stopped = false;

  constructor(
    private readonly options: {
      redis: Redis;
      scripts: Pick<AgentScripts, 'replaceIfEquals' | 'delIfEquals'>;
      keys: RedisKeys;
      hubId: string;
      queues: QueueRegistry;
      /** Lifetime of the lease (default {@link LEADER_TTL_MS}). */
      leaderTtlMs?: number;
    },
  ) {
    this.ttlMs = options.leaderTtlMs ?? LEADER_TTL_MS;
    const { redis, keys, queues } = options;
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
        for (const state of await agentStates(redis, keys)) {
          counts[state] = (counts[state] ?? 0) + 1;
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

  /** Starts renewing (or trying to take) the lease, at once and then every third of its TTL. */
  start(): void {
    if (this.timer || this.stopped) return;
    this.renew();
    this.timer = setInterval(() => this.renew(), Math.max(1, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  /**
   * Stops renewing and gives the lease up, so another replica takes it at its next renewal rather
   * than when the TTL runs out. A replica that lost Redis leaves the lease to lapse instead:
   * waiting for Redis would hold up its close.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const { redis, scripts, keys, hubId } = this.options;
    if (redis.status !== 'ready') return;
    // a renewal still running could take the lease again after it was given up
    await this.renewing;
    await scripts.delIfEquals(keys.metricsLeader, hubId).catch(() => undefined);
  }

  /** One renewal at a time: while Redis does not answer, further ticks are skipped. */
  private renew(): void {
    if (this.renewing) return;
    this.renewing = this.isLeader()
      .catch(() => false)
      .finally(() => {
        this.renewing = undefined;
      });
  }

  /**
   * True when this replica holds (or just took) the metrics lease. Extending it is one script
   * (compare-and-extend): a GET then a PEXPIRE could extend a lease that lapsed and was taken by
   * another replica in between.
   */
  async isLeader(): Promise<boolean> {
    if (this.stopped) return false;
    const { redis, scripts, keys, hubId } = this.options;
    const taken = await redis.set(keys.metricsLeader, hubId, 'PX', this.ttlMs, 'NX');
    if (taken === 'OK') return true;
    return (await scripts.replaceIfEquals(keys.metricsLeader, hubId, hubId, this.ttlMs)) === 1;
  }

  /**
   * The gauges' exposition text, or '' when another replica is the leader. Concurrent scrapes
   * share one reading: while Redis does not answer, each scrape would otherwise queue more
   * commands behind the first.
   */
  render(): Promise<string> {
    this.rendering ??= this.read().finally(() => {
      this.rendering = undefined;
    });
    return this.rendering;
  }

  private async read(): Promise<string> {
    return (await this.isLeader()) ? this.registry.metrics() : '';
  }
}

/**
 * The state of every agent, as its record names it (an unknown one reads as `offline`, as the
 * record's parser has it), in pipelined reads of {@link STATES_PER_READ} agents: the field alone,
 * not the record (whole records were 7 MB from Redis and 160 ms of the leader's event loop per
 * scrape at 10,000 agents; 1.8–2.5 s at 20,000, around the 2 s bound).
 */
async function agentStates(redis: Redis, keys: RedisKeys): Promise<string[]> {
  const ids = await redis.smembers(keys.agents);
  const states: string[] = [];
  for (let i = 0; i < ids.length; i += STATES_PER_READ) {
    const pipeline = redis.pipeline();
    for (const id of ids.slice(i, i + STATES_PER_READ)) pipeline.hget(keys.agent(id), 'state');
    for (const [err, state] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      // a member whose record is gone is no agent
      if (state !== null) states.push(isAgentState(state) ? state : 'offline');
    }
  }
  return states;
}

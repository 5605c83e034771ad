/**
 * 1. Throughput: no-op tasks through 3 hub replicas to simulated agents (real protocol, separate
 * load process), end to end from the first POST to the last completion, against plain BullMQ
 * (Queue.add + Worker at the same concurrency) on the same private Redis in the same run.
 */
import { atLeast, info, runBench, type Figure } from './lib/result';
import { RedisServer } from './lib/redis';
import { hubThroughput, rawThroughput, startCluster } from './lib/scenarios';
import { QUICK, round } from './lib/util';

const TASKS = QUICK ? 2000 : 20_000;
const WARMUP = QUICK ? 200 : 1000;
const AGENT_COUNTS = QUICK ? [100] : [100, 500];
const REPLICAS = 3;
/** POSTs in flight (HTTP) and adds in flight (raw), the same for both. */
const INFLIGHT = 48;
/**
 * The batch run: `POST /v1/tasks/batch` of BATCH tasks (raw: `Queue.addBulk` of as many),
 * BATCH_INFLIGHT requests in flight, 100 agents. Shown beside the targets, which are for the
 * single POSTs above: it shows what the dispatch path does without one HTTP request per task.
 */
const BATCH = 50;
const BATCH_INFLIGHT = 4;
const RUNS: Array<{ agents: number; batch?: number }> = [
  ...AGENT_COUNTS.map((agents) => ({ agents })),
  { agents: 100, batch: BATCH },
];

runBench('throughput', 'Throughput', QUICK ? 150_000 : 1_500_000, async () => {
  const redis = await RedisServer.start();
  const figures: Figure[] = [];
  const details: Record<string, unknown> = {};
  try {
    for (const { agents, batch } of RUNS) {
      const inflight = batch === undefined ? INFLIGHT : BATCH_INFLIGHT;
      const raw = await rawThroughput({
        redis,
        prefix: `raw${agents}${batch ?? ''}`,
        concurrency: agents,
        tasks: TASKS,
        warmup: WARMUP,
        inflight,
        ...(batch !== undefined ? { batch } : {}),
      });
      await redis.flush();
      const cluster = await startCluster({
        redis,
        prefix: `tp${agents}${batch ?? ''}`,
        replicas: REPLICAS,
        agents,
      });
      let hub;
      try {
        hub = await hubThroughput(cluster, {
          redis,
          tasks: TASKS,
          warmup: WARMUP,
          inflight,
          ...(batch !== undefined ? { batch } : {}),
        });
      } finally {
        await cluster.stop();
      }
      await redis.flush();
      const ratio = hub.tasksPerSec / raw.tasksPerSec;
      const run =
        batch === undefined ? `${agents} agents` : `${agents} agents, batches of ${batch}`;
      const batchNote =
        batch === undefined
          ? undefined
          : `POST /v1/tasks/batch of ${batch}, ${inflight} in flight; raw: Queue.addBulk of ${batch}. The targets are for single POSTs`;
      figures.push(
        batch === undefined
          ? atLeast(`tasks/s end to end, ${run}`, hub.tasksPerSec, 5000, 'tasks/s')
          : info(`tasks/s end to end, ${run}`, round(hub.tasksPerSec), 'tasks/s', batchNote),
        info(
          `raw BullMQ jobs/s, ${batch === undefined ? `concurrency ${agents}` : run}`,
          raw.tasksPerSec,
          'jobs/s',
        ),
        batch === undefined
          ? {
              ...atLeast(`ratio to raw BullMQ, ${run}`, ratio, 0.25, '×'),
              value: round(ratio),
            }
          : info(`ratio to raw BullMQ, ${run}`, round(ratio), '×'),
        info(
          `hub CPU per task, ${run} (3 replicas together)`,
          hub.cpuUsPerTask.hubs ?? 0,
          'µs',
          `raw BullMQ process: ${raw.cpuUsPerTask.raw ?? 0} µs/job; Redis: ${hub.cpuUsPerTask.redis ?? 0} µs/task vs ${raw.cpuUsPerTask.redis ?? 0} µs/job`,
        ),
      );
      figures.push(
        info(
          `hub event loop busy / delay p99 per replica, ${run}`,
          hub.loops.map((l) => `${l.utilizationPct}% / ${l.delayP99Ms} ms`).join(', '),
          '',
          `CPU per replica ${Object.entries(hub.corePct)
            .filter(([name]) => name.startsWith('hub-'))
            .map(([, pct]) => `${pct}%`)
            .join(' / ')} of a core; Redis ${hub.corePct.redis ?? 0}%`,
        ),
      );
      const problems: string[] = [];
      if (hub.stats.busyAssigns > 0)
        problems.push(`${hub.stats.busyAssigns} assigns to busy agents`);
      if (hub.stats.completedUnique !== TASKS) {
        problems.push(`${hub.stats.completedUnique} distinct tasks completed of ${TASKS}`);
      }
      if (Object.keys(hub.leftover).length > 0) {
        problems.push(`left in the queue: ${JSON.stringify(hub.leftover)}`);
      }
      figures.push(
        info(
          `tasks completed exactly once, ${run}`,
          problems.length === 0 ? 'yes' : problems.join('; '),
        ),
      );
      details[`agents${agents}${batch === undefined ? '' : `batch${batch}`}`] = { raw, hub };
    }
  } finally {
    await redis.stop();
  }
  return {
    size: `${TASKS.toLocaleString('en-US')} no-op tasks (after ${WARMUP} warm-up), ${REPLICAS} replicas, ${AGENT_COUNTS.join(' and ')} agents, ${INFLIGHT} POSTs in flight; then 100 agents with batches of ${BATCH} (${BATCH_INFLIGHT} in flight)`,
    figures,
    details,
  };
});

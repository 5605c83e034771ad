/**
 * 2. Dispatch latency at a steady rate: POST accepted (201) → `task:assign` received by the agent,
 * and → completion visible through `GET /v1/tasks/:id`; against plain BullMQ `Queue.add` called →
 * processor started, at the same rate and concurrency on the same Redis. Every timing of one side
 * is taken in one process, on one monotonic clock (`performance.now()`).
 */
import type { RawSpec } from './lib/raw-spec';
import { atMost, info, runBench, type Figure } from './lib/result';
import { RedisServer } from './lib/redis';
import { RpcChild } from './lib/rpc';
import { startCluster } from './lib/scenarios';
import { QUICK, distribution, log, round } from './lib/util';

const RATE = 200;
/** A low rate first: the path's own latency, without queueing. */
const LOW_RATE = 20;
const LOW_DURATION_MS = QUICK ? 2000 : 10_000;
const DURATION_MS = QUICK ? 4000 : 20_000;
const WARMUP_MS = QUICK ? 1000 : 3000;
const AGENTS = 100;
const REPLICAS = 3;

runBench('latency', 'Dispatch latency', QUICK ? 150_000 : 500_000, async () => {
  const redis = await RedisServer.start();
  const figures: Figure[] = [];
  try {
    const raw = RpcChild.fork<RawSpec>('raw-bullmq', 'raw-bullmq');
    let rawRun;
    try {
      await raw.call('open', {
        redisPort: redis.port,
        prefix: 'rawlat',
        concurrency: AGENTS,
        recordStarts: true,
      });
      rawRun = await raw.call(
        'steady',
        { rate: RATE, durationMs: DURATION_MS, warmupMs: WARMUP_MS },
        DURATION_MS + WARMUP_MS + 60_000,
      );
      await raw.call('close', {});
    } finally {
      await raw.close();
    }
    const rawDist = distribution(rawRun.addToStart);
    log(`raw BullMQ add → start: p50 ${rawDist.p50} ms, p99 ${rawDist.p99} ms`);
    await redis.flush();

    const cluster = await startCluster({
      redis,
      prefix: 'lat',
      replicas: REPLICAS,
      agents: AGENTS,
      recordTimes: true,
    });
    let run;
    let low;
    try {
      low = await cluster.load.call(
        'steady',
        { urls: cluster.urls, rate: LOW_RATE, durationMs: LOW_DURATION_MS, warmupMs: 500 },
        LOW_DURATION_MS + 60_000,
      );
      run = await cluster.load.call(
        'steady',
        { urls: cluster.urls, rate: RATE, durationMs: DURATION_MS, warmupMs: WARMUP_MS },
        DURATION_MS + WARMUP_MS + 60_000 + ((DURATION_MS + WARMUP_MS) / 1000) * RATE * 25,
      );
    } finally {
      await cluster.stop();
    }
    const assign = distribution(run.acceptedToAssign);
    const sent = distribution(run.sentToAssign);
    const visible = distribution(run.acceptedToVisible);
    const lowAssign = distribution(low.acceptedToAssign);
    log(
      `hub 201 → task:assign: p50 ${assign.p50} ms, p99 ${assign.p99} ms; POST sent → assign p50 ${sent.p50} ms; → completed visible p50 ${visible.p50} ms`,
    );
    figures.push(
      atMost('201 → task:assign, p50', assign.p50, 2, 'ms'),
      atMost('201 → task:assign, p99', assign.p99, 10, 'ms'),
      info('201 → task:assign, max', assign.max, 'ms'),
      info(
        `201 → task:assign at ${LOW_RATE} tasks/s, p50 / p99`,
        `${lowAssign.p50} / ${lowAssign.p99}`,
        'ms',
        'the same path without queueing',
      ),
      info(
        'POST sent → task:assign, p50 / p99',
        `${sent.p50} / ${sent.p99}`,
        'ms',
        'includes the HTTP request and Queue.add (upper bound of the above)',
      ),
      info(
        '201 → completed visible in the API, p50 / p99',
        `${visible.p50} / ${visible.p99}`,
        'ms',
        'accept + complete acks, then GET /v1/tasks/:id; 1 task in 10 polled (polling every one tripled the p99 above)',
      ),
      info('raw BullMQ add → processor start, p50 / p99', `${rawDist.p50} / ${rawDist.p99}`, 'ms'),
      info(
        'hub p50 / raw p50 (201 → assign vs add → start)',
        rawDist.p50 > 0 ? round(assign.p50 / rawDist.p50) : 'n/a',
        '×',
      ),
      info(
        'achieved rate (hub / raw)',
        `${run.achievedRate} / ${rawRun.achievedRate}`,
        'tasks/s',
        run.missing + rawRun.missing > 0
          ? `missing samples: hub ${run.missing}, raw ${rawRun.missing}`
          : undefined,
      ),
    );
    return {
      size: `${RATE} tasks/s for ${DURATION_MS / 1000} s (after ${WARMUP_MS / 1000} s warm-up; before it ${LOW_RATE} tasks/s for ${LOW_DURATION_MS / 1000} s), ${REPLICAS} replicas, ${AGENTS} agents`,
      figures,
      details: {
        hub: {
          lowRate: { acceptedToAssign: lowAssign, missing: low.missing },
          acceptedToAssign: assign,
          sentToAssign: sent,
          acceptedToVisible: visible,
          assignBeforeAccepted: run.assignBeforeAccepted,
          submitted: run.submitted,
          failedPosts: run.failedPosts,
          missing: run.missing,
        },
        raw: { addToStart: rawDist, missing: rawRun.missing },
      },
    };
  } finally {
    await redis.stop();
  }
});

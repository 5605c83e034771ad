/**
 * CPU per task against the rate (`docs/scaling.md`, ninth pass): raw BullMQ, then agentcom (3
 * replicas, 100 agents), each at a list of steady rates on one private Redis, 9 s per rate.
 * Prints one JSON line per system and rate: Redis CPU per task (`utime + stime` of the
 * redis-server process / tasks submitted), and for agentcom the replicas' and the load process's,
 * and the 201 → `task:assign` p50 (it grows without bound past agentcom's full speed: a backlog).
 * Not part of `make bench`; run it on a quiet machine:
 *
 *   make bench-bundle && RATES=200,1000,2000 node .tmp/bench/rate-sweep.js
 */
import type { RawSpec } from './lib/raw-spec';
import { cpuMs, killAll } from './lib/procs';
import { RedisServer } from './lib/redis';
import { RpcChild } from './lib/rpc';
import { startCluster, warmUp } from './lib/scenarios';
import { distribution, log, round } from './lib/util';

const RATES = (process.env.RATES ?? '200,600,1000,2000').split(',').map(Number);
const DURATION_MS = 8000;
const WARMUP_MS = 1000;
const AGENTS = 100;
const WARMUP_TASKS = 20_000;

/** CPU ms of each pid, now. */
const cpuOf = (pids: readonly number[]): number[] => pids.map((pid) => cpuMs(pid) ?? 0);
/** µs per task of the CPU `pids` used since `before`. */
const usPerTask = (pids: readonly number[], before: readonly number[], tasks: number): number =>
  round((cpuOf(pids).reduce((sum, ms, i) => sum + ms - (before[i] ?? 0), 0) * 1000) / tasks);

async function sweep(): Promise<void> {
  const redis = await RedisServer.start();
  const redisPid = [redis.proc.pid];
  try {
    const raw = RpcChild.fork<RawSpec>('raw-bullmq', 'raw-bullmq');
    try {
      await raw.call('open', { redisPort: redis.port, prefix: 'sweepraw', concurrency: AGENTS });
      await raw.call('produce', { n: WARMUP_TASKS, inflight: 48, timeoutMs: 120_000 }, 180_000);
      for (const rate of RATES) {
        const before = cpuOf(redisPid);
        const run = await raw.call(
          'steady',
          { rate, durationMs: DURATION_MS, warmupMs: WARMUP_MS },
          DURATION_MS + 90_000,
        );
        console.log(
          JSON.stringify({
            system: 'raw BullMQ',
            rate,
            achievedRate: run.achievedRate,
            missing: run.missing,
            redisUsPerTask: usPerTask(redisPid, before, run.submitted),
          }),
        );
      }
      await raw.call('close', {});
    } finally {
      await raw.close();
    }
    await redis.flush();

    const cluster = await startCluster({ redis, prefix: 'sweep', replicas: 3, agents: AGENTS });
    try {
      await warmUp(cluster, { tasks: WARMUP_TASKS, inflight: 48 });
      const hubPids = cluster.hubs.map((hub) => hub.proc.pid);
      const loadPid = [cluster.load.pid];
      for (const rate of RATES) {
        const before = { redis: cpuOf(redisPid), hubs: cpuOf(hubPids), load: cpuOf(loadPid) };
        const run = await cluster.load.call(
          'steady',
          {
            urls: cluster.urls,
            rate,
            durationMs: DURATION_MS,
            warmupMs: WARMUP_MS,
            watchVisible: false,
          },
          DURATION_MS + 180_000,
        );
        console.log(
          JSON.stringify({
            system: 'agentcom',
            rate,
            achievedRate: run.achievedRate,
            missing: run.missing,
            redisUsPerTask: usPerTask(redisPid, before.redis, run.submitted),
            hubsUsPerTask: usPerTask(hubPids, before.hubs, run.submitted),
            loadUsPerTask: usPerTask(loadPid, before.load, run.submitted),
            assignP50Ms: distribution(run.acceptedToAssign).p50,
          }),
        );
      }
    } finally {
      await cluster.stop();
    }
  } finally {
    await redis.stop();
  }
}

sweep().then(
  () => {
    killAll();
    process.exit(0);
  },
  (err: unknown) => {
    log(`rate sweep failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    killAll();
    process.exit(1);
  },
);

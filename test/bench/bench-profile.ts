/**
 * 6. Profile: the throughput run (3 replicas, 100 agents) with replica 1 under
 * `node --cpu-prof`; where its main thread spends the measured window, by package and by
 * function. The raw profile stays in `.tmp/bench/prof/` (open it in Chrome DevTools).
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { summarizeProfile } from './lib/cpuprofile';
import { info, runBench, type Figure } from './lib/result';
import { RedisServer } from './lib/redis';
import { hubThroughput, startCluster } from './lib/scenarios';
import { BENCH_DIR, QUICK, log, now } from './lib/util';

const TASKS = QUICK ? 1000 : 20_000;
/** As the throughput bench: a cluster's hub CPU per task levels off from about 15,000 tasks. */
const WARMUP = QUICK ? 1500 : 20_000;
const AGENTS = 100;
const REPLICAS = 3;
const INFLIGHT = 48;
/** `BENCH_BATCH=50`: submit with POST /v1/tasks/batch (4 in flight), to profile the dispatch path alone. */
const BATCH = process.env.BENCH_BATCH ? Number(process.env.BENCH_BATCH) : undefined;
const PROFILE_DIR = join(BENCH_DIR, 'prof');

runBench('profile', 'Hub CPU profile', QUICK ? 150_000 : 900_000, async () => {
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
  const redis = await RedisServer.start();
  try {
    const cluster = await startCluster({
      redis,
      prefix: 'prof',
      replicas: REPLICAS,
      agents: AGENTS,
      nodeArgs: (i) =>
        i === 0
          ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR, '--cpu-prof-name', 'hub-1.cpuprofile']
          : [],
    });
    const profiled = cluster.hubs[0];
    if (!profiled) throw new Error('no hub');
    let from = 0;
    let to = 0;
    let run;
    try {
      run = await hubThroughput(cluster, {
        redis,
        tasks: TASKS,
        warmup: WARMUP,
        ...(BATCH !== undefined ? { inflight: 4, batch: BATCH } : { inflight: INFLIGHT }),
        before: async () => {
          from = now();
        },
        after: async () => {
          to = now();
        },
      });
      // graceful stop: the profile is written when the process exits
      await profiled.proc.stop('SIGTERM', 30_000);
    } finally {
      await cluster.stop();
    }
    const file = readdirSync(PROFILE_DIR).find((name) => name.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no .cpuprofile in ${PROFILE_DIR}:\n${profiled.proc.tail()}`);
    // the profile's clock starts with the process (≈ spawn time, a few ms of bootstrap later)
    const path = join(PROFILE_DIR, file);
    const summary = summarizeProfile(path, {
      fromMs: from - profiled.proc.startedAt,
      toMs: to - profiled.proc.startedAt,
    });
    log(
      `profile of ${profiled.id}: busy ${summary.busyPct}% of ${summary.windowMs} ms; top: ${summary.categories
        .slice(0, 5)
        .map((c) => `${c.name} ${c.pct}%`)
        .join(', ')}`,
    );
    const figures: Figure[] = [
      info('tasks/s with replica 1 profiled', run.tasksPerSec, 'tasks/s'),
      info(
        'replica 1 main thread busy',
        summary.busyPct,
        '% of the window',
        `${summary.busyMs} ms sampled busy in ${summary.windowMs} ms (wall-clock samples: time the process waited for a CPU counts too); replica 1 CPU from /proc: ${run.cpuUsPerTask['hub-1'] ?? 0} µs per task of the run`,
      ),
      ...summary.categories
        .slice(0, 8)
        .map((c) => info(`self time: ${c.name}`, c.pct, '% of busy')),
    ];
    return {
      size: `${TASKS.toLocaleString('en-US')} no-op tasks, ${REPLICAS} replicas (replica 1 under --cpu-prof), ${AGENTS} agents; profile ${join('.tmp', 'bench', 'prof', file)}`,
      figures,
      details: { profile: summary, throughput: run },
    };
  } finally {
    await redis.stop();
  }
});

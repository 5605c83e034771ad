/**
 * 3. Redis cost per task, agentcom against plain BullMQ on the same private Redis:
 * - all commands: `INFO commandstats` calls (Lua-internal `redis.call`s included, and the
 *   EVALSHA itself), delta over the measured window / tasks;
 * - client commands and round trips: counted client side by a preload in every process that
 *   talks to Redis (`redis-io-counter.ts`): RESP commands written, and `socket.write()` calls
 *   (one per command, pipeline or MULTI block: a round trip);
 * - Lua-internal = all − client commands.
 * The window includes the background work (heartbeats, sweeper, stalled checks); its idle rate is
 * measured just before and reported.
 *
 * Redis CPU per task is also measured with both at the same steady rate: at full speed raw BullMQ
 * runs several times faster, and Redis's CPU per task falls steeply with the rate (each wake-up
 * of an idle Redis costs it more than the commands it then runs), so the full-speed figures
 * compare two different loads.
 */
import { join } from 'node:path';
import type { RawSpec } from './lib/raw-spec';
import { atMost, info, runBench, type Figure } from './lib/result';
import { RedisServer, countersDelta, type RedisCounters } from './lib/redis';
import { diffIo, readIoCounter, sumIo, type IoSnapshot } from './lib/resp-counter';
import { RpcChild } from './lib/rpc';
import { scriptTimes, type ScriptTime } from './lib/script-times';
import { hubThroughput, startCluster } from './lib/scenarios';
import { BENCH_DIR, QUICK, log, now, round, sleep } from './lib/util';

const TASKS = QUICK ? 500 : 5000;
const AGENTS = 100;
const REPLICAS = 3;
const INFLIGHT = 48;
const IDLE_MS = QUICK ? 2000 : 5000;
/** The steady rate both run at for the same-rate CPU figure: below agentcom's full speed here. */
const STEADY_RATE = QUICK ? 400 : 1000;
const STEADY_MS = QUICK ? 2000 : 8000;
const STEADY_WARMUP_MS = QUICK ? 500 : 1000;
/** Redis's time per script (SLOWLOG) is taken at this steady rate, for this long. */
const SCRIPT_RATE = QUICK ? 200 : 500;
const SCRIPT_MS = QUICK ? 2000 : 4000;

/** Redis CPU (µs) per task while `run` submits tasks at a steady rate and waits for them. */
async function redisCpuAtRate(
  redis: RedisServer,
  run: () => Promise<{ submitted: number; missing: number }>,
): Promise<number> {
  const before = (await redis.counters()).cpuMs;
  const { submitted, missing } = await run();
  if (missing > 0) throw new Error(`steady rate: ${missing} tasks did not complete`);
  return round((((await redis.counters()).cpuMs - before) * 1000) / submitted);
}

interface Snapshot {
  at: number;
  redis: RedisCounters;
  io: IoSnapshot;
}

interface Cost {
  tasks: number;
  windowMs: number;
  /** Per task. */
  allCommands: number;
  /** `total_commands_processed` delta / tasks: the same count as `allCommands` (Redis 7 counts
   * Lua-internal calls there too), a cross-check; it includes the few INFO calls of the bench. */
  totalProcessed: number;
  clientCommands: number;
  luaInternal: number;
  roundTrips: number;
  bytesSent: number;
  scriptCalls: number;
  redisCpuUs: number;
  /** Idle background per second. */
  idleCommandsPerSec: number;
  idleRoundTripsPerSec: number;
  topServer: Record<string, number>;
  /** Redis time (µs) per task by command (a script's time includes its calls). */
  topServerUsec: Record<string, number>;
  topClient: Record<string, number>;
}

function cost(tasks: number, a: Snapshot, b: Snapshot, c: Snapshot): Cost {
  const idle = countersDelta(a.redis, b.redis);
  const idleIo = diffIo(a.io, b.io);
  const run = countersDelta(b.redis, c.redis);
  const io = diffIo(b.io, c.io);
  const idleSec = (b.at - a.at) / 1000;
  const per = (n: number): number => round(n / tasks);
  const top = (entries: Iterable<[string, number]>): Record<string, number> =>
    Object.fromEntries(
      [...entries]
        .sort((x, y) => y[1] - x[1])
        .slice(0, 15)
        .map(([name, n]) => [name, per(n)]),
    );
  return {
    tasks,
    windowMs: Math.round(c.at - b.at),
    allCommands: per(run.all),
    totalProcessed: per(c.redis.totalCommands - b.redis.totalCommands),
    clientCommands: per(io.commands),
    luaInternal: per(run.all - io.commands),
    roundTrips: per(io.writes),
    bytesSent: per(io.bytes),
    scriptCalls: per(run.scriptCalls),
    redisCpuUs: round((run.cpuMs * 1000) / tasks),
    idleCommandsPerSec: round(idle.all / idleSec),
    idleRoundTripsPerSec: round(idleIo.writes / idleSec),
    topServer: top(run.byCommand),
    topServerUsec: top(run.usecByCommand),
    topClient: top(Object.entries(io.byName)),
  };
}

runBench('redis-cost', 'Redis cost per task', QUICK ? 150_000 : 400_000, async () => {
  const redis = await RedisServer.start();
  const counterArgs = ['--require', join(BENCH_DIR, 'redis-io-counter.js')];
  try {
    // ---- raw BullMQ ----
    const rawIoFile = join(BENCH_DIR, 'io-raw.json');
    const raw = RpcChild.fork<RawSpec>('raw-bullmq', 'raw-bullmq', {
      execArgv: counterArgs,
      env: { BENCH_REDIS_PORT: String(redis.port), BENCH_IO_FILE: rawIoFile },
    });
    let rawCost: Cost;
    let rawSteadyCpuUs: number;
    let rawScripts: ScriptTime[];
    try {
      await raw.call('open', { redisPort: redis.port, prefix: 'rawcost', concurrency: AGENTS });
      await raw.call('produce', { n: 200, inflight: INFLIGHT, timeoutMs: 60_000 });
      const snap = async (): Promise<Snapshot> => ({
        at: now(),
        redis: await redis.counters(),
        io: await readIoCounter(raw.pid, rawIoFile),
      });
      await sleep(500);
      const a = await snap();
      await sleep(IDLE_MS);
      const b = await snap();
      const run = await raw.call('produce', { n: TASKS, inflight: INFLIGHT, timeoutMs: 120_000 });
      if (!run.reached) throw new Error(`raw BullMQ completed ${run.completed}/${TASKS}`);
      const c = await snap();
      rawCost = cost(TASKS, a, b, c);
      rawSteadyCpuUs = await redisCpuAtRate(redis, () =>
        raw.call(
          'steady',
          { rate: STEADY_RATE, durationMs: STEADY_MS, warmupMs: STEADY_WARMUP_MS },
          STEADY_MS + 90_000,
        ),
      );
      rawScripts = await scriptTimes(redis, () =>
        raw.call(
          'steady',
          { rate: SCRIPT_RATE, durationMs: SCRIPT_MS, warmupMs: 0 },
          SCRIPT_MS + 90_000,
        ),
      );
      await raw.call('close', {});
    } finally {
      await raw.close();
    }
    log(`raw BullMQ: ${rawCost.allCommands} commands, ${rawCost.roundTrips} round trips per job`);
    await redis.flush();

    // ---- agentcom ----
    const cluster = await startCluster({
      redis,
      prefix: 'cost',
      replicas: REPLICAS,
      agents: AGENTS,
      countRedisIo: true,
    });
    let hubCost: Cost;
    let hubSteadyCpuUs: number;
    let hubScripts: ScriptTime[];
    try {
      const snap = async (): Promise<Snapshot> => ({
        at: now(),
        redis: await redis.counters(),
        io: sumIo(
          await Promise.all(
            cluster.hubs.map((hub) => readIoCounter(hub.proc.pid, hub.ioFile ?? '')),
          ),
        ),
      });
      const snaps: Snapshot[] = [];
      await hubThroughput(cluster, {
        redis,
        tasks: TASKS,
        warmup: 200,
        inflight: INFLIGHT,
        before: async () => {
          await sleep(500);
          snaps.push(await snap());
          await sleep(IDLE_MS);
          snaps.push(await snap());
        },
        after: async () => {
          snaps.push(await snap());
        },
      });
      const [a, b, c] = snaps;
      if (!a || !b || !c) throw new Error('missing snapshots');
      hubCost = cost(TASKS, a, b, c);
      hubSteadyCpuUs = await redisCpuAtRate(redis, () =>
        cluster.load.call(
          'steady',
          {
            urls: cluster.urls,
            rate: STEADY_RATE,
            durationMs: STEADY_MS,
            warmupMs: STEADY_WARMUP_MS,
            watchVisible: false,
          },
          STEADY_MS + 90_000,
        ),
      );
      hubScripts = await scriptTimes(redis, () =>
        cluster.load.call(
          'steady',
          {
            urls: cluster.urls,
            rate: SCRIPT_RATE,
            durationMs: SCRIPT_MS,
            warmupMs: 0,
            watchVisible: false,
          },
          SCRIPT_MS + 90_000,
        ),
      );
    } finally {
      await cluster.stop();
    }
    log(`agentcom: ${hubCost.allCommands} commands, ${hubCost.roundTrips} round trips per task`);

    const figures: Figure[] = [
      atMost(
        'commands per task / raw (all, Lua-internal included)',
        hubCost.allCommands / rawCost.allCommands,
        2,
        '×',
        `${hubCost.allCommands} vs ${rawCost.allCommands} per job`,
      ),
      atMost(
        'round trips per task / raw',
        hubCost.roundTrips / rawCost.roundTrips,
        2,
        '×',
        `${hubCost.roundTrips} vs ${rawCost.roundTrips} per job`,
      ),
      info('agentcom commands per task (all)', hubCost.allCommands),
      info(
        'bytes sent to Redis per task (agentcom / raw)',
        `${hubCost.bytesSent} / ${rawCost.bytesSent}`,
        'B',
      ),
      info('agentcom round trips per task', hubCost.roundTrips),
      info(
        'agentcom client commands / Lua-internal / script calls per task',
        `${hubCost.clientCommands} / ${hubCost.luaInternal} / ${hubCost.scriptCalls}`,
      ),
      info('raw BullMQ commands per job (all)', rawCost.allCommands),
      info('raw BullMQ round trips per job', rawCost.roundTrips),
      info(
        'raw BullMQ client commands / Lua-internal / script calls per job',
        `${rawCost.clientCommands} / ${rawCost.luaInternal} / ${rawCost.scriptCalls}`,
      ),
      info(
        'Redis CPU per task at full speed (agentcom / raw)',
        `${hubCost.redisCpuUs} / ${rawCost.redisCpuUs}`,
        'µs',
        'each at its own rate: not comparable, see the next line',
      ),
      info(
        `Redis CPU per task, both at ${STEADY_RATE.toLocaleString('en-US')} tasks/s: agentcom / raw`,
        round(hubSteadyCpuUs / rawSteadyCpuUs),
        '×',
        `${hubSteadyCpuUs} vs ${rawSteadyCpuUs} µs`,
      ),
      info(
        'idle background, commands/s (agentcom 3 replicas + agents / raw)',
        `${hubCost.idleCommandsPerSec} / ${rawCost.idleCommandsPerSec}`,
        '',
        `round trips/s ${hubCost.idleRoundTripsPerSec} / ${rawCost.idleRoundTripsPerSec}`,
      ),
    ];
    return {
      size: `${TASKS.toLocaleString('en-US')} no-op tasks at full speed, ${REPLICAS} replicas, ${AGENTS} agents (heartbeats 5 s); raw BullMQ worker at concurrency ${AGENTS}; then each at a steady ${STEADY_RATE.toLocaleString('en-US')} tasks/s for ${(STEADY_WARMUP_MS + STEADY_MS) / 1000} s (Redis CPU), and at ${SCRIPT_RATE} tasks/s for ${SCRIPT_MS / 1000} s with every command in SLOWLOG (Redis time per script)`,
      figures,
      details: {
        agentcom: { ...hubCost, redisCpuUsAtSteadyRate: hubSteadyCpuUs },
        raw: { ...rawCost, redisCpuUsAtSteadyRate: rawSteadyCpuUs },
        steadyRate: STEADY_RATE,
        scripts: { rate: SCRIPT_RATE, agentcom: hubScripts, raw: rawScripts },
      },
    };
  } finally {
    await redis.stop();
  }
});

import { getQueues, requestJson } from './http';
import { startFloorHubs, startHubs, stopHubs, type HubProc } from './hubs';
import type { LoadSpec, LoadStats } from './load-spec';
import { CpuMeter } from './procs';
import { loopWindow, readIoCounter } from './resp-counter';
import type { RawSpec } from './raw-spec';
import type { RedisServer } from './redis';
import { RpcChild } from './rpc';
import { log, now, round } from './util';

/**
 * How long `tasks` may take to complete, bounded with room for a slow, shared machine: a warm-up
 * (10 ms per task, at least a minute) or a measured run (25 ms per task, at least 5 minutes).
 * The RPC that waits gets {@link RPC_MARGIN_MS} more, so the child's own timeout answers first.
 */
function completionTimeoutMs(tasks: number, kind: 'warm-up' | 'measured'): number {
  return kind === 'warm-up' ? Math.max(60_000, tasks * 10) : Math.max(300_000, tasks * 25);
}
const RPC_MARGIN_MS = 20_000;

/**
 * POSTs `n` no-op tasks, `inflight` requests at a time, round-robin over `urls`; with `batch`,
 * each request is a `POST /v1/tasks/batch` of that many tasks.
 */
export async function submitTasks(
  urls: readonly string[],
  n: number,
  inflight: number,
  batch?: number,
): Promise<{ ids: string[]; failed: number; ms: number }> {
  const ids: string[] = [];
  let failed = 0;
  let next = 0;
  let request = 0;
  const start = now();
  const lanes = Array.from({ length: Math.min(inflight, n) }, async () => {
    while (next < n) {
      const url = urls[request++ % urls.length] ?? '';
      if (batch !== undefined) {
        const first = next;
        next = Math.min(n, next + batch);
        const tasks = Array.from({ length: next - first }, (_, k) => ({
          payload: { i: first + k },
        }));
        try {
          const res = await requestJson<{ tasks: Array<{ id: string }> }>(
            'POST',
            `${url}/v1/tasks/batch`,
            { tasks },
          );
          if (res.status === 201) ids.push(...res.body.tasks.map((t) => t.id));
          else failed += tasks.length;
        } catch {
          failed += tasks.length;
        }
        continue;
      }
      const index = next++;
      try {
        const res = await requestJson<{ id: string }>('POST', `${url}/v1/tasks`, {
          payload: { i: index },
        });
        if (res.status === 201) ids.push(res.body.id);
        else failed++;
      } catch {
        failed++;
      }
    }
  });
  await Promise.all(lanes);
  return { ids, failed, ms: now() - start };
}

export interface RawThroughput {
  tasksPerSec: number;
  ms: number;
  /** CPU per job (µs) by process: `raw` (producer + worker) and `redis`. */
  cpuUsPerTask: Record<string, number>;
  corePct: Record<string, number>;
}

/** A plain BullMQ producer and worker (a separate process) on a private Redis. */
export interface RawRunner {
  /** The producer and worker's process. */
  readonly pid: number;
  /** `tasks` no-op jobs added `inflight` at a time (or in batches), to the last completion. */
  measure(tasks: number): Promise<RawThroughput>;
  close(): Promise<void>;
}

/**
 * Opens plain BullMQ on `redis` (worker at `concurrency`) and warms it up with `warmup` jobs; each
 * {@link RawRunner.measure} then adds jobs `inflight` at a time, or with `Queue.addBulk` of
 * `batch`.
 */
export async function openRaw(options: {
  redis: RedisServer;
  prefix: string;
  concurrency: number;
  warmup: number;
  inflight: number;
  batch?: number;
}): Promise<RawRunner> {
  const { redis } = options;
  const raw = RpcChild.fork<RawSpec>('raw-bullmq', 'raw-bullmq');
  try {
    await raw.call('open', {
      redisPort: redis.port,
      prefix: options.prefix,
      concurrency: options.concurrency,
    });
    // warmed up as it is measured (batches in the batch run)
    const timeoutMs = completionTimeoutMs(options.warmup, 'warm-up');
    const warm = await raw.call(
      'produce',
      {
        n: options.warmup,
        inflight: options.inflight,
        timeoutMs,
        ...(options.batch !== undefined ? { batch: options.batch } : {}),
      },
      timeoutMs + RPC_MARGIN_MS,
    );
    if (!warm.reached)
      throw new Error(`raw warm-up: ${warm.completed}/${options.warmup} completed`);
  } catch (err) {
    await raw.close();
    throw err;
  }
  const measure = async (tasks: number): Promise<RawThroughput> => {
    const cpu = new CpuMeter(
      new Map([
        ['raw', raw.pid],
        ['redis', redis.pid],
      ]),
    );
    cpu.start();
    const timeoutMs = completionTimeoutMs(tasks, 'measured');
    const run = await raw.call(
      'produce',
      {
        n: tasks,
        inflight: options.inflight,
        timeoutMs,
        ...(options.batch !== undefined ? { batch: options.batch } : {}),
      },
      timeoutMs + RPC_MARGIN_MS,
    );
    const usage = cpu.stop();
    if (!run.reached) throw new Error(`raw BullMQ completed ${run.completed}/${tasks}`);
    const cpuUsPerTask: Record<string, number> = {};
    const corePct: Record<string, number> = {};
    for (const [name, u] of Object.entries(usage.byProcess)) {
      cpuUsPerTask[name] = round((u.cpuMs * 1000) / tasks);
      corePct[name] = u.corePct;
    }
    log(
      `raw BullMQ, concurrency ${options.concurrency}: ${run.tasksPerSec} jobs/s (${tasks} in ${run.ms} ms)`,
    );
    return { tasksPerSec: run.tasksPerSec, ms: run.ms, cpuUsPerTask, corePct };
  };
  const close = async (): Promise<void> => {
    await raw.call('close', {}).catch(() => undefined);
    await raw.close();
  };
  return { pid: raw.pid, measure, close };
}

export interface HubRun {
  hubs: HubProc[];
  load: RpcChild<LoadSpec>;
  urls: string[];
  /** Stops the load process and the hubs. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `replicas` hubs and a load process with `agents` connected simulated agents. */
export async function startCluster(options: {
  redis: RedisServer;
  prefix: string;
  replicas: number;
  agents: number;
  heartbeatMs?: number;
  holdMs?: number;
  env?: Record<string, string>;
  nodeArgs?: (index: number) => string[];
  countRedisIo?: boolean;
  recordTimes?: boolean;
  /** Transport-floor stand-ins (`floor-hub.ts`) instead of real hubs; Redis unused. */
  floor?: boolean;
}): Promise<HubRun> {
  const hubs = options.floor
    ? await startFloorHubs({ prefix: options.prefix, count: options.replicas })
    : await startHubs({
        redisUrl: options.redis.url,
        redisPort: options.redis.port,
        prefix: options.prefix,
        count: options.replicas,
        ...(options.env ? { env: options.env } : {}),
        ...(options.nodeArgs ? { nodeArgs: options.nodeArgs } : {}),
        ...(options.countRedisIo ? { countRedisIo: true } : {}),
        observe: true,
      });
  const urls = hubs.map((hub) => hub.url);
  const load = RpcChild.fork<LoadSpec>('load-agents', 'load-agents');
  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    await load.close();
    await stopHubs(hubs, signal);
  };
  try {
    const init = await load.call(
      'init',
      {
        urls,
        idPrefix: `${options.prefix}-agent`,
        count: options.agents,
        queues: ['default'],
        heartbeatMs: options.heartbeatMs ?? 5000,
        holdMs: options.holdMs ?? 0,
        ...(options.recordTimes ? { recordTimes: true } : {}),
      },
      300_000,
    );
    if (init.failed > 0 || init.connected < options.agents) {
      throw new Error(`only ${init.connected}/${options.agents} agents connected`);
    }
    log(
      `${options.replicas} hubs, ${options.agents} agents connected (tokens ${init.mintMs} ms, connect ${init.connectMs} ms, per replica ${init.perUrl.join('/')})`,
    );
    return { hubs, load, urls, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface HubThroughput {
  tasksPerSec: number;
  ms: number;
  submitMs: number;
  cpuUsPerTask: Record<string, number>;
  corePct: Record<string, number>;
  stats: LoadStats;
  leftover: Record<string, number>;
  /** Per replica over the measured window: event-loop utilization and delay. */
  loops: Array<ReturnType<typeof loopWindow>>;
}

/**
 * `tasks` no-op tasks through the hubs, submitted as the measured runs submit them (`inflight`
 * requests, `batch` tasks each), waited for, not measured: JIT warm-up.
 */
export async function warmUp(
  run: HubRun,
  options: { tasks: number; inflight: number; batch?: number },
): Promise<void> {
  const warm = await submitTasks(run.urls, options.tasks, options.inflight, options.batch);
  const timeoutMs = completionTimeoutMs(options.tasks, 'warm-up');
  const done = await run.load.call(
    'waitCompleted',
    { n: warm.ids.length, timeoutMs },
    timeoutMs + RPC_MARGIN_MS,
  );
  if (!done.reached) throw new Error(`warm-up: ${done.completed}/${warm.ids.length} completed`);
}

/**
 * `tasks` no-op tasks through the hubs, end to end: from the first `POST /v1/tasks` to the last
 * `task:complete` acknowledged (the load process tells the moment the count is reached).
 * `around` runs just before and just after the measured part (counter snapshots).
 */
export async function hubThroughput(
  run: HubRun,
  options: {
    redis: RedisServer;
    tasks: number;
    warmup: number;
    inflight: number;
    /** Submit with `POST /v1/tasks/batch`, this many tasks per request. */
    batch?: number;
    before?: () => Promise<void>;
    after?: () => Promise<void>;
  },
): Promise<HubThroughput> {
  const { load, urls, hubs } = run;
  const { tasks } = options;
  if (options.warmup > 0) {
    await warmUp(run, {
      tasks: options.warmup,
      inflight: options.inflight,
      ...(options.batch !== undefined ? { batch: options.batch } : {}),
    });
  }
  await load.call('resetStats', {});
  await options.before?.();
  const loopsBefore = await Promise.all(
    hubs.map((hub) =>
      hub.ioFile ? readIoCounter(hub.proc.pid, hub.ioFile) : Promise.resolve(undefined),
    ),
  );
  const pids = new Map<string, number>(hubs.map((hub, i) => [`hub-${i + 1}`, hub.proc.pid]));
  pids.set('redis', options.redis.pid);
  pids.set('load', load.pid);
  pids.set('submitter', process.pid);
  const cpu = new CpuMeter(pids);
  cpu.start();
  const start = now();
  const timeoutMs = completionTimeoutMs(tasks, 'measured');
  const completion = load.call('waitCompleted', { n: tasks, timeoutMs }, timeoutMs + RPC_MARGIN_MS);
  const submitted = await submitTasks(urls, tasks, options.inflight, options.batch);
  if (submitted.failed > 0) throw new Error(`${submitted.failed} POST /v1/tasks failed`);
  const done = await completion;
  const ms = now() - start;
  const usage = cpu.stop();
  const loopsAfter = await Promise.all(
    hubs.map((hub) =>
      hub.ioFile ? readIoCounter(hub.proc.pid, hub.ioFile) : Promise.resolve(undefined),
    ),
  );
  await options.after?.();
  const stats = await load.call('stats', {});
  if (!done.reached) {
    throw new Error(`only ${done.completed}/${tasks} tasks completed: ${JSON.stringify(stats)}`);
  }
  const queues = await getQueues(urls[0] ?? '');
  const counts = queues.find((q) => q.name === 'default')?.counts ?? {};
  const leftover: Record<string, number> = {};
  for (const state of ['waiting', 'prioritized', 'delayed', 'active', 'failed']) {
    if ((counts[state] ?? 0) > 0) leftover[state] = counts[state] ?? 0;
  }
  const cpuUsPerTask: Record<string, number> = {};
  const corePct: Record<string, number> = {};
  let hubCpu = 0;
  for (const [name, u] of Object.entries(usage.byProcess)) {
    cpuUsPerTask[name] = round((u.cpuMs * 1000) / tasks);
    corePct[name] = u.corePct;
    if (name.startsWith('hub-')) hubCpu += u.cpuMs;
  }
  cpuUsPerTask.hubs = round((hubCpu * 1000) / tasks);
  const tasksPerSec = (tasks * 1000) / ms;
  log(
    `hubs: ${Math.round(tasksPerSec)} tasks/s (${tasks} in ${Math.round(ms)} ms; submitting took ${Math.round(submitted.ms)} ms)`,
  );
  const loops = hubs.flatMap((_, i) => {
    const a = loopsBefore[i];
    const b = loopsAfter[i];
    return a && b ? [loopWindow(a, b)] : [];
  });
  return {
    tasksPerSec,
    loops,
    ms: Math.round(ms),
    submitMs: Math.round(submitted.ms),
    cpuUsPerTask,
    corePct,
    stats,
    leftover,
  };
}

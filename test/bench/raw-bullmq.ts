/**
 * The baseline: plain BullMQ on the same Redis, in its own process (forked by a benchmark,
 * commands over IPC). A `Queue` adds no-op jobs with the options the hub gives a task (uuid job
 * id, 3 attempts, the hub's default retention) and a `Worker` with a no-op processor runs them at
 * the agents' concurrency.
 */
import { randomUUID } from 'node:crypto';
import { Queue, Worker, type JobsOptions } from 'bullmq';
import type { RawSpec } from './lib/raw-spec';
import { serveRpc } from './lib/rpc';
import { now, sleep } from './lib/util';

/** The job options of `TaskService.create` with the hub's defaults (config.ts RETENTION_*). */
const JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  removeOnComplete: { count: 10_000, age: 7 * 86_400 },
  removeOnFail: { count: 50_000, age: 30 * 86_400 },
};

let queue: Queue | undefined;
let worker: Worker | undefined;
let completed = 0;
const startAt = new Map<string, number>();
/** Whether `open` asked for start times (`steady`'s add → start). */
let recording = false;
const completionWaiters = new Set<() => void>();

/** Jobs `from` to `to - 1` in one `Queue.addBulk`. */
function addBulk(from: number, to: number): Promise<unknown> {
  if (!queue) throw new Error('not open');
  const jobs = [];
  for (let i = from; i < to; i++) {
    jobs.push({
      name: 'task',
      data: { payload: { i } },
      opts: { ...JOB_OPTIONS, jobId: randomUUID() },
    });
  }
  return queue.addBulk(jobs);
}

function add(index: number): Promise<unknown> {
  if (!queue) throw new Error('not open');
  return queue.add('task', { payload: { i: index } }, { ...JOB_OPTIONS, jobId: randomUUID() });
}

function cpuMs(): number {
  const usage = process.cpuUsage();
  return Math.round((usage.user + usage.system) / 1000);
}

async function waitCompleted(n: number, timeoutMs: number): Promise<boolean> {
  if (completed >= n) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      completionWaiters.delete(check);
      resolve(completed >= n);
    }, timeoutMs);
    const check = (): void => {
      if (completed < n) return;
      clearTimeout(timer);
      completionWaiters.delete(check);
      resolve(true);
    };
    completionWaiters.add(check);
  });
}

serveRpc<RawSpec>({
  open: async ({ redisPort, prefix, concurrency, recordStarts }) => {
    recording = recordStarts === true;
    const connection = { host: '127.0.0.1', port: redisPort, maxRetriesPerRequest: null };
    queue = new Queue(`raw`, { connection, prefix });
    worker = new Worker(
      'raw',
      async (job) => {
        if (recording && job.id) startAt.set(job.id, now());
        return undefined;
      },
      { connection, prefix, concurrency },
    );
    worker.on('completed', () => {
      completed++;
      for (const wake of [...completionWaiters]) wake();
    });
    worker.on('error', () => undefined);
    queue.on('error', () => undefined);
    await Promise.all([queue.waitUntilReady(), worker.waitUntilReady()]);
    // the worker's blocking connection is up once it has polled once
    await sleep(200);
    return {};
  },

  produce: async ({ n, inflight, timeoutMs, batch }) => {
    const base = completed;
    const cpuBefore = cpuMs();
    const start = now();
    let next = 0;
    const lanes = Array.from({ length: inflight }, async () => {
      while (next < n) {
        if (batch === undefined) {
          await add(next++);
          continue;
        }
        const first = next;
        next = Math.min(n, next + batch);
        await addBulk(first, next);
      }
    });
    const addsDone = Promise.all(lanes).then(() => now());
    const reached = await waitCompleted(base + n, timeoutMs);
    const addedAt = await addsDone;
    const ms = now() - start;
    return {
      ms: Math.round(ms),
      addMs: Math.round(addedAt - start),
      completed: completed - base,
      reached,
      tasksPerSec: Math.round((n * 1000) / ms),
      cpuMs: cpuMs() - cpuBefore,
    };
  },

  steady: async ({ rate, durationMs, warmupMs }) => {
    const addAt = new Map<string, number>();
    const pending: Array<Promise<unknown>> = [];
    let submitted = 0;
    const run = async (ms: number, measured: boolean): Promise<number> => {
      const start = now();
      let sent = 0;
      while (now() - start < ms) {
        const due = Math.floor(((now() - start) * rate) / 1000);
        while (sent < due) {
          const id = randomUUID();
          if (measured) addAt.set(id, now());
          if (!queue) throw new Error('not open');
          pending.push(
            queue.add('task', { payload: { i: submitted++ } }, { ...JOB_OPTIONS, jobId: id }),
          );
          sent++;
        }
        await sleep(1);
      }
      return (sent * 1000) / (now() - start);
    };
    const base = completed;
    await run(warmupMs, false);
    const achievedRate = await run(durationMs, true);
    await Promise.all(pending);
    await waitCompleted(base + submitted, 30_000);
    const addToStart: number[] = [];
    // without recorded starts, what did not complete
    let missing = recording ? 0 : Math.max(0, base + submitted - completed);
    for (const [id, at] of recording ? addAt : []) {
      const started = startAt.get(id);
      if (started === undefined) missing++;
      else addToStart.push(started - at);
    }
    return { addToStart, missing, submitted, achievedRate: Math.round(achievedRate * 10) / 10 };
  },

  close: async () => {
    await worker?.close(true).catch(() => undefined);
    await queue?.close().catch(() => undefined);
    return {};
  },
});

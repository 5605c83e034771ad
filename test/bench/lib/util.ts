import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { eventually } from '../../helpers/poll';

/** `QUICK=1`: the small version of every benchmark (whole run under 2 minutes). */
export const QUICK = ['1', 'true', 'yes'].includes((process.env.QUICK ?? '').toLowerCase());

/** The repository root: the first parent of this file holding `Makefile` and `hub/`. */
export const ROOT = findRoot(__dirname);

/** Where the bundles, profiles and scratch files of the benchmarks live (gitignored). */
export const BENCH_DIR = join(ROOT, '.tmp', 'bench');

export const HUB_MAIN = join(ROOT, 'hub', 'dist', 'main.js');
export const SIDECAR_CLI = join(ROOT, 'sidecar', 'dist', 'cli.js');

/** Admin key of every benchmark hub (only ever on 127.0.0.1). */
export const ADMIN_KEY = 'bench-admin-key-0123456789abcdef';

function findRoot(start: string): string {
  let dir = start;
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'Makefile')) && existsSync(join(dir, 'hub'))) return dir;
    dir = dirname(dir);
  }
  return process.cwd();
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** Milliseconds on a monotonic clock (sub-millisecond resolution). */
export const now = (): number => performance.now();

/** Progress goes to stderr; stdout carries only the benchmark's JSON line. */
export function log(message: string): void {
  const t = new Date().toISOString().slice(11, 23);
  process.stderr.write(`[${t}] ${message}\n`);
}

/** Polls `check` until it returns something other than undefined, or throws after `timeoutMs`. */
export function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  intervalMs = 50,
): Promise<T> {
  return eventually(check, { timeoutMs, intervalMs, what });
}

/** Rejects after `ms` unless `promise` settled first. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `worker` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  worker: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (;;) {
      const index = next++;
      if (index >= items.length) return;
      results[index] = await worker(items[index] as T, index);
    }
  });
  await Promise.all(lanes);
  return results;
}

export interface Distribution {
  count: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles of `values` (empty: all zero). */
export function distribution(values: readonly number[]): Distribution {
  if (values.length === 0) return { count: 0, min: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    min: round(sorted[0] ?? 0),
    p50: round(at(0.5)),
    p90: round(at(0.9)),
    p99: round(at(0.99)),
    max: round(sorted[sorted.length - 1] ?? 0),
    mean: round(sum / sorted.length),
  };
}

/**
 * The middle value; with an even count, the mean of the two middle ones (for a few rounds,
 * where {@link distribution}'s nearest-rank p50 would take the lower one).
 */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? 0)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Rounds to 3 significant decimals for small values, 1 decimal for large ones. */
export function round(value: number): number {
  if (!Number.isFinite(value)) return value;
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 1 : abs >= 1 ? 2 : 3;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

import { killAll } from './procs';
import { QUICK, errorMessage, log, round } from './util';

/** One measured figure; `pass` is set when the figure has a target. */
export interface Figure {
  name: string;
  value: number | string;
  unit?: string;
  target?: string;
  pass?: boolean;
  note?: string;
}

/** The JSON line a benchmark prints on stdout. */
export interface BenchResult {
  bench: string;
  title: string;
  quick: boolean;
  /** What ran, at which size. */
  size: string;
  figures: Figure[];
  details?: Record<string, unknown>;
  error?: string;
  durationMs: number;
}

export type BenchBody = () => Promise<Pick<BenchResult, 'size' | 'figures' | 'details'>>;

export function atLeast(
  name: string,
  value: number,
  min: number,
  unit: string,
  note?: string,
): Figure {
  return {
    name,
    value: round(value),
    unit,
    target: `≥ ${min.toLocaleString('en-US')}${unit ? ` ${unit}` : ''}`,
    pass: value >= min,
    ...(note ? { note } : {}),
  };
}

export function atMost(
  name: string,
  value: number,
  max: number,
  unit: string,
  note?: string,
): Figure {
  return {
    name,
    value: round(value),
    unit,
    target: `≤ ${max.toLocaleString('en-US')}${unit ? ` ${unit}` : ''}`,
    pass: value <= max,
    ...(note ? { note } : {}),
  };
}

export function info(name: string, value: number | string, unit = '', note?: string): Figure {
  return {
    name,
    value: typeof value === 'number' ? round(value) : value,
    ...(unit ? { unit } : {}),
    ...(note ? { note } : {}),
  };
}

/**
 * Runs one benchmark: prints its result as one JSON line on stdout, kills every process it
 * started (also on failure, deadline or signal) and exits (0, or 1 on failure).
 */
export function runBench(bench: string, title: string, deadlineMs: number, body: BenchBody): void {
  const started = performance.now();
  let finished = false;
  const finish = (result: Omit<BenchResult, 'bench' | 'title' | 'quick' | 'durationMs'>): void => {
    if (finished) return;
    finished = true;
    const line: BenchResult = {
      bench,
      title,
      quick: QUICK,
      durationMs: Math.round(performance.now() - started),
      ...result,
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
    killAll();
    process.exit(result.error ? 1 : 0);
  };
  const fail = (why: string): void => {
    log(`${bench}: FAILED: ${why}`);
    finish({ size: '', figures: [], error: why });
  };
  const deadline = setTimeout(() => fail(`deadline of ${deadlineMs} ms exceeded`), deadlineMs);
  deadline.unref();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => fail(`interrupted (${signal})`));
  }
  process.on('uncaughtException', (err) => fail(`uncaught: ${err.stack ?? err.message}`));
  process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${errorMessage(err)}`));
  log(`${bench}: start${QUICK ? ' (QUICK)' : ''}`);
  body().then(
    (result) => {
      log(`${bench}: done in ${Math.round((performance.now() - started) / 1000)} s`);
      finish(result);
    },
    (err: unknown) => fail(err instanceof Error ? (err.stack ?? err.message) : String(err)),
  );
}

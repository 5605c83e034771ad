import type { HubConfig } from './config';

/**
 * The bounds of a replica's graceful stop (`Hub.close`), and the exit deadline `main.ts` derives
 * from them. After `SHUTDOWN_DELAY_MS` a stop spends at most: the Redis budget (half of
 * `SHUTDOWN_GRACE_MS`), the cut of HTTP requests still in flight (at most the other half) and
 * {@link DISCONNECTS_BOUND_MS}; the deadline leaves {@link EXIT_MARGIN_MS} above the grace, so a stop
 * that keeps its bounds never meets it, whatever Redis does.
 */
type StopTimings = Pick<HubConfig, 'shutdownDelayMs' | 'shutdownGraceMs'>;

/** Longest wait for the HTTP requests still in flight before their connections are cut. */
const HTTP_CLOSE_BOUND_MS = 5000;
/** How long a stop waits for the disconnects of its closed sockets to be recorded in Redis. */
export const DISCONNECTS_BOUND_MS = 2000;
/** Time above delay and grace before `main.ts` gives up on a stop (exit 1). */
const EXIT_MARGIN_MS = 5000;

/** How long HTTP requests still in flight may take once the sockets closed. */
export const httpCloseBoundMs = (timings: StopTimings): number =>
  Math.min(HTTP_CLOSE_BOUND_MS, timings.shutdownGraceMs / 2);

/** Time all of a stop's waits on Redis-bound work may take together (see {@link StopBudget}). */
export const redisStopBudgetMs = (timings: StopTimings): number => timings.shutdownGraceMs / 2;

/** When `main.ts` exits 1 after a signal: past the delay, the grace and a margin. */
export const exitDeadlineMs = (timings: StopTimings): number =>
  timings.shutdownDelayMs + timings.shutdownGraceMs + EXIT_MARGIN_MS;

/** Whether `work` settled (either way) within `ms`; its rejection is never thrown. */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = work.then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  const inTime = await Promise.race([settled, late]);
  clearTimeout(timer);
  return inTime;
}

/**
 * Time a stop may spend waiting on work that needs Redis (dispatch steps, the sweep, the lease
 * tick, the metrics lease, BullMQ's close, QUIT), shared by all of those waits. While Redis answers
 * each takes milliseconds; while it is away or frozen (ioredis keeps the commands queued, without
 * a timeout) the first such wait spends the budget and the later ones are not waited for, so the
 * stop goes on and ends within its bounds instead of at the exit deadline.
 */
export class StopBudget {
  private spentMs = 0;

  constructor(
    private readonly totalMs: number,
    /** Told about each wait given up (what it waited for). */
    private readonly onGivenUp: (what: string) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Waits for `work` as long as the budget allows; false when it was given up. */
  async wait(what: string, work: Promise<unknown>): Promise<boolean> {
    const started = this.now();
    const inTime = await settlesWithin(work, this.remainingMs());
    // a wait given up spent what was left (a timer may fire a fraction of a millisecond early)
    this.spentMs = inTime ? this.spentMs + (this.now() - started) : this.totalMs;
    if (!inTime) this.onGivenUp(what);
    return inTime;
  }

  remainingMs(): number {
    return Math.max(0, this.totalMs - this.spentMs);
  }
}

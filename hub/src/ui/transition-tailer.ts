import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import { parseTransitionEntry, type UiTransition } from './ui-events';

export interface TransitionTailerOptions {
  /**
   * Makes the dedicated connection a run blocks on (XREAD BLOCK holds it for up to `blockMs`):
   * called on each start; the tailer closes it on stop.
   */
  connect: () => Redis;
  /** The events stream (`keys.events`). */
  stream: string;
  logger: Logger;
  /** Receives each batch read, oldest first. */
  onTransitions: (events: UiTransition[]) => void;
  /** Longest single XREAD BLOCK (ms). Default 5000. */
  blockMs?: number;
  /** Most entries per read. Default 200. */
  count?: number;
  /** Pause after a failed read before the next (ms). Default 1000. */
  retryMs?: number;
}

/** One start-to-stop span of tailing, on its own connection. */
interface TailRun {
  connection: Redis;
  stopped: boolean;
  /** Resolves when the run is stopped: a pending read is abandoned then, not awaited. */
  halted: Promise<void>;
  halt: () => void;
  /** Resolves once the start point is fixed (never rejects). */
  ready: Promise<void>;
  loop: Promise<void>;
  wakeRetry?: () => void;
}

/** What {@link TransitionTailer.unlessHalted} answers for a read abandoned by a stop. */
const HALTED: unique symbol = Symbol('halted');

const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * Tails the agent events stream on one replica, while it has browsers to hand transitions to:
 * `start` when the first `/ui` socket arrives, `stop` when the last one leaves (an idle replica
 * issues no XREAD and holds no blocking connection). Every replica hands what it reads to its
 * own browsers only, so each browser sees each transition exactly once, whichever replica made
 * it and whichever replica the browser is connected to.
 *
 * Each start reads from the stream's last entry at that moment, and `start()` resolves once that
 * point is fixed: a snapshot read after it covers the past, the tail everything since. Within a
 * run it follows the last id it read, so a Redis reconnect loses nothing still in the stream.
 */
export class TransitionTailer {
  private current: TailRun | undefined;
  private readonly loops = new Set<Promise<void>>();
  private closed = false;
  private readonly blockMs: number;
  private readonly count: number;
  private readonly retryMs: number;

  constructor(private readonly options: TransitionTailerOptions) {
    this.blockMs = options.blockMs ?? 5000;
    this.count = options.count ?? 200;
    this.retryMs = options.retryMs ?? 1000;
  }

  /**
   * Starts tailing unless it runs already. Resolves once the start point is fixed: every
   * transition after it will be delivered. After `close`, does nothing.
   */
  start(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.current ??= this.begin();
    return this.current.ready;
  }

  /** Stops tailing: closes the run's connection (its pending XREAD is abandoned). */
  stop(): void {
    const run = this.current;
    if (!run) return;
    this.current = undefined;
    run.stopped = true;
    run.halt();
    run.wakeRetry?.();
    run.connection.disconnect();
  }

  /** Stops for good and waits for the reading loops to end. */
  async close(): Promise<void> {
    this.closed = true;
    this.stop();
    await Promise.all([...this.loops]);
  }

  private begin(): TailRun {
    const connection = this.options.connect();
    // Errors surface again as failed reads (logged there); an unheard `error` event would be noise.
    connection.on('error', () => undefined);
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    let halt!: () => void;
    const halted = new Promise<void>((resolve) => (halt = resolve));
    const run: TailRun = {
      connection,
      stopped: false,
      halted,
      halt,
      ready,
      loop: Promise.resolve(),
    };
    run.loop = this.run(run, markReady).finally(() => {
      markReady(); // a run stopped before its start point was fixed: nobody waits forever
      this.loops.delete(run.loop);
    });
    this.loops.add(run.loop);
    return run;
  }

  private async run(run: TailRun, markReady: () => void): Promise<void> {
    const { stream, logger } = this.options;
    let lastId: string | undefined;
    let lastLogged = 0;
    while (!run.stopped) {
      try {
        if (lastId === undefined) {
          // The newest entry now ('0-0' for an empty stream): XREAD returns what comes after it.
          const newest = await this.unlessHalted(
            run,
            run.connection.xrevrange(stream, '+', '-', 'COUNT', 1),
          );
          if (newest === HALTED) break;
          lastId = newest[0]?.[0] ?? '0-0';
          markReady();
          continue;
        }
        const reply = await this.unlessHalted(
          run,
          run.connection.xread(
            'COUNT',
            this.count,
            'BLOCK',
            this.blockMs,
            'STREAMS',
            stream,
            lastId,
          ),
        );
        if (reply === HALTED || run.stopped) break;
        const entries = reply?.[0]?.[1] ?? [];
        if (entries.length === 0) continue;
        const last = entries[entries.length - 1];
        if (last) lastId = last[0];
        this.deliver(entries.map(([id, fields]) => parseTransitionEntry(id, fields)));
      } catch (err) {
        if (run.stopped) break;
        // No start point yet (Redis unreachable?): let the socket in anyway, and find one on
        // the retry. The browsers' snapshots, refreshed every few seconds and on any version
        // gap, cover what the tail misses meanwhile.
        markReady();
        const now = Date.now();
        if (now - lastLogged > 30_000) {
          lastLogged = now;
          logger.warn({ err: errorMessage(err) }, 'ui: tail failed');
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.retryMs);
          run.wakeRetry = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        run.wakeRetry = undefined;
      }
    }
  }

  /**
   * The read's reply, or {@link HALTED} once the run is stopped. A connection stopped while it
   * reconnects (Redis down) neither answers nor fails the read it holds, and a loop awaiting it
   * would keep `close()`, and so the replica's graceful stop, waiting for ever.
   */
  private async unlessHalted<T>(run: TailRun, read: Promise<T>): Promise<T | typeof HALTED> {
    read.catch(() => undefined); // an abandoned read may still fail: nobody listens then
    return Promise.race([read, run.halted.then((): typeof HALTED => HALTED)]);
  }

  private deliver(events: UiTransition[]): void {
    try {
      this.options.onTransitions(events);
    } catch (err) {
      this.options.logger.error({ err: errorMessage(err) }, 'ui: delivering transitions failed');
    }
  }
}

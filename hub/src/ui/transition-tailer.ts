import type { Redis } from 'ioredis';
import type { Logger } from '../logger';
import { parseTransitionEntry, type UiTransition } from './ui-events';

export interface TransitionTailerOptions {
  /** A dedicated connection: XREAD BLOCK holds it for up to `blockMs`. The tailer closes it. */
  connection: Redis;
  /** The events stream (`keys.events`). */
  stream: string;
  logger: Logger;
  /** Receives each batch read, oldest first. */
  onTransitions: (events: UiTransition[]) => void;
  /** Longest single XREAD BLOCK (ms); bounds how long a stop can wait. Default 5000. */
  blockMs?: number;
  /** Most entries per read. Default 200. */
  count?: number;
  /** Pause after a failed read before the next (ms). Default 1000. */
  retryMs?: number;
}

/**
 * Tails the agent events stream on one replica. Every replica runs one and hands what it reads
 * to its own browsers only, so each browser sees each transition exactly once, whichever
 * replica made it and whichever replica the browser is connected to.
 *
 * It starts at `$` (transitions from now on: the snapshot covers the past) and then follows the
 * last id it read, so a Redis reconnect loses nothing that is still in the stream.
 */
export class TransitionTailer {
  private lastId = '$';
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly blockMs: number;
  private readonly count: number;
  private readonly retryMs: number;
  private wakeRetry: (() => void) | undefined;

  constructor(private readonly options: TransitionTailerOptions) {
    this.blockMs = options.blockMs ?? 5000;
    this.count = options.count ?? 200;
    this.retryMs = options.retryMs ?? 1000;
    // Errors surface again as failed reads (logged there); an unheard `error` event would be noise.
    options.connection.on('error', () => undefined);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops the loop and closes the connection (a pending XREAD is abandoned, not awaited). */
  async close(): Promise<void> {
    this.stopped = true;
    this.wakeRetry?.();
    this.options.connection.disconnect();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { connection, stream, logger } = this.options;
    let lastLogged = 0;
    while (!this.stopped) {
      try {
        const reply = await connection.xread(
          'COUNT',
          this.count,
          'BLOCK',
          this.blockMs,
          'STREAMS',
          stream,
          this.lastId,
        );
        if (this.stopped) break;
        const entries = reply?.[0]?.[1] ?? [];
        if (entries.length === 0) continue;
        const last = entries[entries.length - 1];
        if (last) this.lastId = last[0];
        this.deliver(entries.map(([id, fields]) => parseTransitionEntry(id, fields)));
      } catch (err) {
        if (this.stopped) break;
        const now = Date.now();
        if (now - lastLogged > 30_000) {
          lastLogged = now;
          logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'ui: tail failed');
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.retryMs);
          this.wakeRetry = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wakeRetry = undefined;
      }
    }
  }

  private deliver(events: UiTransition[]): void {
    try {
      this.options.onTransitions(events);
    } catch (err) {
      this.options.logger.error(
        { err: err instanceof Error ? err.message : String(err) },
        'ui: delivering transitions failed',
      );
    }
  }
}

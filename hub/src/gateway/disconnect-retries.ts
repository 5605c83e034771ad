import { backoffMs } from '@agentcom/shared';
import type { Logger } from '../logger';

/** The pause before the first retry of a refused disconnect, before jitter. */
export const FIRST_RETRY_MS = 1000;
/** No pause between two retries is longer. */
export const MAX_RETRY_MS = 30_000;

export interface DisconnectRetriesOptions {
  /** Records the disconnect of connection `socketId` (`Presence.disconnect`). */
  record: (agentId: string, socketId: string) => Promise<void>;
  logger: Logger;
  firstRetryMs?: number;
  maxRetryMs?: number;
  /** The jitter's source, a number in [0, 1) (`Math.random` by default). */
  random?: () => number;
}

/**
 * Disconnects Redis refused to record (an error reply: an ACL, `OOM`, a read-only replica; a lost
 * connection alone does not fail them, ioredis holds the commands until it is back), recorded
 * again with backoff until they are, while the replica runs. Left as it was, the record names a
 * closed connection of a live replica, and nothing else clears it (the other replicas clear the
 * agents of a replica that stopped, only): an idle agent stayed claimable, each task pushed to it
 * waiting out an ack timeout, and a draining agent stayed `draining` instead of `offline`.
 * A retry after the agent connected again changes nothing: `Presence.disconnect` acts only while
 * the record names the closed connection.
 */
export class DisconnectRetries {
  /** The next retry of each connection's disconnect, by socket id. */
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly options: DisconnectRetriesOptions) {}

  /** Records the disconnect again later; `attempt` is the number of tries that failed. */
  schedule(agentId: string, socketId: string, attempt = 1): void {
    if (this.stopped || this.pending.has(socketId)) return;
    const { firstRetryMs = FIRST_RETRY_MS, maxRetryMs = MAX_RETRY_MS, logger } = this.options;
    const { random } = this.options;
    const delayMs = backoffMs(attempt, { baseMs: firstRetryMs, maxMs: maxRetryMs, random });
    const timer = setTimeout(() => {
      this.pending.delete(socketId);
      this.options.record(agentId, socketId).then(
        () => logger.info({ agentId, attempts: attempt + 1 }, 'disconnect recorded on a retry'),
        (err: unknown) => {
          logger.warn(
            { agentId, err: String(err), attempts: attempt + 1 },
            'recording disconnect failed again: trying later',
          );
          this.schedule(agentId, socketId, attempt + 1);
        },
      );
    }, delayMs);
    timer.unref();
    this.pending.set(socketId, timer);
  }

  /** Disconnects waiting for a retry. */
  size(): number {
    return this.pending.size;
  }

  /**
   * Drops the retries (a stopping replica): once its liveness ages out, the other replicas record
   * the disconnect of every agent its records still name.
   */
  stop(): void {
    this.stopped = true;
    for (const timer of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
  }
}

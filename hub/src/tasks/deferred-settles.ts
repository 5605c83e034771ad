import type { Logger } from '../logger';

/** The first wait before a failed settle runs again; it doubles at each failure, up to the max. */
export const FIRST_RETRY_MS = 1000;
export const MAX_RETRY_MS = 5 * 60 * 1000;
/** How many failed settles a replica keeps, and Redis records (each a few hundred bytes). */
export const MAX_KEPT = 10_000;

/** A settle of an idempotency key that failed. */
export interface DeferredSettle {
  queue: string;
  taskId: string;
  idempotencyKey: string;
  failures: number;
  /** When it is due to run again (`Date.now()`). */
  dueAt: number;
}

/**
 * The settles of idempotency keys that failed and whose record Redis refused too
 * (`RecordedSettles`: Redis away, or the record full), kept in this replica to run again, and to
 * record once Redis takes it (`IdempotencyKeys.settleDeferred`): each waits 1 s after its first
 * failure, twice as long after each next one, at most 5 min. At most {@link MAX_KEPT}: one more
 * is dropped (its key keeps the TTL it had), logged. A failure is logged at the first of a
 * streak only: a Redis that refuses every settle would log one line per task.
 */
export class DeferredSettles {
  /** By queue and task id, in the order they first failed. */
  private readonly entries = new Map<string, DeferredSettle>();
  /** Settles dropped since the map was last empty. */
  private dropped = 0;

  constructor(private readonly logger?: Logger) {}

  /** Keeps a settle that failed with `err` (again, for one kept already). */
  add(queue: string, taskId: string, idempotencyKey: string, err: unknown): void {
    const id = entryId(queue, taskId);
    const known = this.entries.get(id);
    if (!known && this.entries.size >= MAX_KEPT) {
      if (this.dropped++ === 0) {
        this.logger?.warn(
          { queue, taskId, err: String(err), kept: this.entries.size },
          'idempotency key not settled, and too many settles wait already: its key keeps its TTL',
        );
      }
      return;
    }
    if (this.entries.size === 0) {
      this.dropped = 0;
      this.logger?.warn(
        { queue, taskId, err: String(err) },
        'idempotency key not settled, nor its settle recorded: kept here, run again on the next ticks',
      );
    }
    const failures = (known?.failures ?? 0) + 1;
    this.entries.set(id, { queue, taskId, idempotencyKey, failures, dueAt: dueAfter(failures) });
  }

  /** The settles due by `now`, at most `limit`, oldest first. */
  due(now: number, limit: number): DeferredSettle[] {
    const due: DeferredSettle[] = [];
    for (const entry of this.entries.values()) {
      if (due.length === limit) break;
      if (entry.dueAt <= now) due.push(entry);
    }
    return due;
  }

  /** `entry` went through: forgotten (unless a newer failure of the task replaced it). */
  done(entry: DeferredSettle): void {
    const id = entryId(entry.queue, entry.taskId);
    if (this.entries.get(id) === entry) this.entries.delete(id);
  }

  /** `entry` failed again: it waits twice as long. */
  failedAgain(entry: DeferredSettle): void {
    entry.failures++;
    entry.dueAt = dueAfter(entry.failures);
  }

  get size(): number {
    return this.entries.size;
  }
}

const entryId = (queue: string, taskId: string): string => `${queue}\n${taskId}`;

/** When a settle that failed `failures` times runs again. */
const dueAfter = (failures: number): number =>
  Date.now() + Math.min(FIRST_RETRY_MS * 2 ** Math.min(failures - 1, 20), MAX_RETRY_MS);

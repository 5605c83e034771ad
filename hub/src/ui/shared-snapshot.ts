import type { UiSnapshot, UiTransition } from './ui-events';

/**
 * How long a built snapshot keeps answering the tabs that ask for one (ms). A tab is never sent
 * a state older than the transitions it gets (see {@link SharedSnapshot}), so the window only
 * ages what transitions do not carry, heartbeat times and BullMQ counts, which a tab refreshes
 * every 10 s anyway. One second covers the tabs that come together: the burst of a page
 * (re)loaded in several tabs, and the tabs of a stopped replica reconnecting here
 * (socket.io-client's first retry lands 0.5 to 1.5 s after the drop). It is also the shortest
 * interval one tab may ask at, and it bounds what is held: the snapshot, and the transitions
 * handed out while it is shared.
 */
export const SNAPSHOT_REUSE_MS = 1000;

export interface SharedSnapshotOptions {
  /** Reads a whole snapshot from Redis (every agent record). */
  read: () => Promise<UiSnapshot>;
  /** How long a built snapshot answers (ms). Default {@link SNAPSHOT_REUSE_MS}. */
  reuseMs?: number;
  /** The clock of `serverTime`, the one the records' times are on (Redis's). */
  now: () => number;
}

/** What one tab is sent: the shared snapshot, and the transitions it needs on top of it. */
export interface SnapshotForTab {
  /** The shared snapshot, its `serverTime` the time it is sent (the tab derives its skew). */
  snapshot: UiSnapshot;
  /**
   * Transitions handed to this replica's tabs after the snapshot's read began and before this
   * tab joined: the snapshot may not show them and the tab was not sent them. Oldest first.
   */
  missed: UiTransition[];
}

/** One read of the snapshot, shared while it is {@link SharedSnapshot.current}. */
interface Build {
  /** Orders builds: a request that needs a read begun after it waits for a higher one. */
  serial: number;
  /** Batches handed to the tabs before the read began ({@link SharedSnapshot.handedOut}). */
  startPosition: number;
  /** Every batch handed to the tabs since the read began, for as long as it is current. */
  batches: UiTransition[][];
  snapshot: Promise<UiSnapshot>;
  /** Resolves once the read ended, either way. */
  settled: Promise<void>;
  done: boolean;
  expiry?: NodeJS.Timeout;
}

/**
 * The snapshot of one replica's `/ui` tabs: read at most once at a time and shared. A tab that
 * asks while a read is under way gets that one, and so does a tab that asks within `reuseMs` of
 * its end; past that, or when it failed, the next tab starts a new read.
 *
 * A tab gets the transitions the tail hands out from the moment it joins the namespace, and the
 * snapshot shows every transition handed out before its read began (a transition is in Redis
 * before the tail can read it). What falls in between, handed out after the read began and
 * before the tab joined, it would miss: those batches are kept with the build while it is shared
 * and sent to the tab after the snapshot ({@link SnapshotForTab.missed}). The page applies a
 * transition only when it is newer than the agent's version, so those the snapshot already shows
 * change nothing.
 */
export class SharedSnapshot {
  private position = 0;
  private serial = 0;
  private current: Build | undefined;
  private readonly reuseMs: number;

  constructor(private readonly options: SharedSnapshotOptions) {
    this.reuseMs = options.reuseMs ?? SNAPSHOT_REUSE_MS;
  }

  /** Batches of transitions handed to the tabs so far: a tab notes it when it joins. */
  get handedOut(): number {
    return this.position;
  }

  /** Counts a batch handed to the tabs (call it even when no tab is there to get it). */
  noteHandedOut(events: UiTransition[]): void {
    this.position++;
    this.current?.batches.push(events);
  }

  /**
   * The snapshot for a tab that joined when {@link handedOut} was `joinedAt`. `fresh`: one whose
   * read begins after this call (the tab saw a transition its snapshot cannot explain); it waits
   * for the read under way to end first, so reads still happen one at a time.
   */
  async forTab(joinedAt: number, { fresh = false } = {}): Promise<SnapshotForTab> {
    const build = await this.buildFrom(fresh ? this.serial + 1 : 0);
    const snapshot = await build.snapshot;
    const missed = build.batches.slice(0, Math.max(0, joinedAt - build.startPosition)).flat();
    return { snapshot: { ...snapshot, serverTime: this.options.now() }, missed };
  }

  /**
   * Shares nothing read before now: the tail stopped (its last tab left), so the transitions
   * until it runs again are in no batch, and a tab that comes later needs a read after that.
   * A read under way still answers the tabs that asked for it.
   */
  forget(): void {
    const build = this.current;
    if (!build) return;
    clearTimeout(build.expiry);
    this.current = undefined;
  }

  private async buildFrom(minSerial: number): Promise<Build> {
    for (;;) {
      const build = this.current;
      if (build && build.serial >= minSerial) return build;
      if (!build || build.done) return this.start();
      await build.settled; // one read at a time: a fresh one waits for the one under way
    }
  }

  private start(): Build {
    this.forget();
    const snapshot = new Promise<UiSnapshot>((resolve) => resolve(this.options.read()));
    const build: Build = {
      serial: ++this.serial,
      startPosition: this.position,
      batches: [],
      snapshot,
      settled: Promise.resolve(),
      done: false,
    };
    build.settled = snapshot.then(
      () => {
        build.done = true;
        // held no longer than the window: an idle replica keeps no snapshot
        if (this.current === build)
          build.expiry = setTimeout(() => this.drop(build), this.reuseMs).unref();
      },
      () => {
        build.done = true;
        this.drop(build); // its tabs get the error; the next one reads again
      },
    );
    this.current = build;
    return build;
  }

  private drop(build: Build): void {
    if (this.current === build) this.forget();
  }
}

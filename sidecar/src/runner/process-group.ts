import { groupHasLiveMember } from './process-identity';

/** How often a terminating group is checked for being empty during its grace. */
const EMPTY_CHECK_MS = 50;

/**
 * A process group (a task's process started with `detached: true` leads its own group, so the
 * group id is its pid). Signals go to `-pgid`: the whole tree the task started, not only its
 * first process.
 */
export class ProcessGroup {
  private ended: Promise<void> | undefined;
  private finish: (() => void) | undefined;
  private timers: Array<NodeJS.Timeout> = [];
  /**
   * Seen without a live process: it is never signalled again. Its id is then free for the
   * kernel to give to a new process, which would lead a group of the same id: a late signal
   * (the second one of a sidecar stopping, after the task had ended) could reach that group.
   */
  private gone = false;

  constructor(
    readonly pgid: number,
    private readonly graceMs: number,
  ) {}

  /**
   * Whether a process of the group still runs. A zombie does not count: where PID 1 does not reap
   * orphans (some containers and VMs), an exited grandchild would otherwise keep the group
   * "alive" until the grace ran out.
   */
  isAlive(): boolean {
    if (this.gone) return false;
    if (!groupHasLiveMember(this.pgid)) this.gone = true;
    return !this.gone;
  }

  /**
   * SIGTERM to the group, then SIGKILL after the grace unless the group is empty by then.
   * Idempotent; settles when the group is empty or has been sent SIGKILL.
   */
  terminate(): Promise<void> {
    if (this.ended !== undefined) return this.ended;
    this.ended = new Promise<void>((resolve) => {
      this.finish = () => {
        for (const timer of this.timers) clearTimeout(timer);
        this.timers = [];
        resolve();
      };
    });
    if (!this.signal('SIGTERM')) {
      this.done();
      return this.ended;
    }
    this.timers.push(
      setTimeout(() => {
        this.signal('SIGKILL');
        this.done();
      }, this.graceMs),
      setInterval(() => {
        if (!this.isAlive()) this.done();
      }, EMPTY_CHECK_MS),
    );
    return this.ended;
  }

  /** SIGKILL to the group now, synchronously (unless it was seen gone). */
  killNow(): void {
    this.signal('SIGKILL');
    this.done();
  }

  /** Sends `signal` to the group; false when it is gone (seen so before, or now). */
  private signal(signal: NodeJS.Signals): boolean {
    if (this.gone) return false;
    if (!signalGroup(this.pgid, signal)) this.gone = true;
    return !this.gone;
  }

  private done(): void {
    this.finish?.();
    this.finish = undefined;
    this.ended ??= Promise.resolve();
  }
}

/** Sends `signal` to the group; false when no process of the group exists any more. */
function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    // EPERM: a member we may not signal (it changed user); it exists, so the group does.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

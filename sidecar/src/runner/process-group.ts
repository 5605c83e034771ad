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
    return groupHasLiveMember(this.pgid);
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
    if (!signalGroup(this.pgid, 'SIGTERM')) {
      this.done();
      return this.ended;
    }
    this.timers.push(
      setTimeout(() => {
        signalGroup(this.pgid, 'SIGKILL');
        this.done();
      }, this.graceMs),
      setInterval(() => {
        if (!this.isAlive()) this.done();
      }, EMPTY_CHECK_MS),
    );
    return this.ended;
  }

  /** SIGKILL to the group now, synchronously. */
  killNow(): void {
    signalGroup(this.pgid, 'SIGKILL');
    this.done();
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

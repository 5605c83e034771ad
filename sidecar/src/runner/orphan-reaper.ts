import {
  groupHasLiveMember,
  procfsAvailable,
  readBootId,
  readProcStat,
  type TaskProcess,
} from './process-identity';

/** How long the group may take to vanish after SIGKILL before it is reported as surviving. */
const AFTER_KILL_MS = 1000;

/**
 * What {@link reapOrphan} did about a recorded task process group:
 * - `not-running`: nothing of it runs (or the machine rebooted since); nothing signalled.
 * - `pid-reused`: its pid now belongs to a process started at another time; nothing signalled.
 * - `terminated`: the group was sent SIGTERM and emptied within the grace.
 * - `killed`: the group outlived the grace and was sent SIGKILL; it is gone.
 * - `survived`: signalled, yet a member still runs (one that may not be signalled, or stuck).
 * - `skipped-unverifiable`: the group may run but cannot be proven to be the task's (no start
 *   time recorded, no procfs, or its leader exited and left members); nothing signalled.
 */
export type ReapOutcome =
  'not-running' | 'pid-reused' | 'terminated' | 'killed' | 'survived' | 'skipped-unverifiable';

export interface ReapOptions {
  /** SIGTERM → SIGKILL delay (the sidecar's `killGraceMs`). */
  graceMs: number;
  /** How often the group is checked for being empty. Default 50 ms. */
  pollMs?: number;
}

/**
 * Stops the process group a previous sidecar process left running (it died while the task ran):
 * SIGTERM to the group, SIGKILL after `graceMs` if it is not empty by then.
 *
 * A group is signalled only when its leader still exists with the recorded start time (and, when
 * recorded, within the same boot): a pid alone may have been given to an unrelated process since.
 * Linux keeps a pid from reuse while its process or a group named after it exists, so a leader
 * with the right start time proves the group is the task's. A signal that finds no process
 * (ESRCH) or none it may signal (EPERM) does not throw.
 */
export async function reapOrphan(
  recorded: TaskProcess,
  options: ReapOptions,
): Promise<ReapOutcome> {
  const { pid } = recorded;
  const pollMs = options.pollMs ?? 50;
  if (recorded.startTime === undefined || !procfsAvailable()) return 'skipped-unverifiable';
  const bootId = readBootId();
  if (recorded.bootId !== undefined && bootId !== undefined && recorded.bootId !== bootId) {
    // A reboot ended every process of the previous boot.
    return 'not-running';
  }
  const leader = readProcStat(pid);
  if (leader === undefined) {
    // The leader exited (and was reaped); members it left keep its pid as their group id, but so
    // would the members of a later group whose leader was given the pid: not provably the task's.
    return groupHasLiveMember(pid) ? 'skipped-unverifiable' : 'not-running';
  }
  if (leader.startTime !== recorded.startTime) return 'pid-reused';
  if (!groupHasLiveMember(pid)) return 'not-running';

  const term = signalGroup(pid, 'SIGTERM');
  if (term === 'gone') return 'not-running';
  if (await emptiesWithin(pid, options.graceMs, pollMs)) return 'terminated';
  const again = readProcStat(pid);
  if (again !== undefined && again.startTime !== recorded.startTime) return 'terminated';
  if (signalGroup(pid, 'SIGKILL') === 'gone') return term === 'sent' ? 'terminated' : 'not-running';
  return (await emptiesWithin(pid, AFTER_KILL_MS, pollMs)) ? 'killed' : 'survived';
}

/** `kill(-pgid, signal)`: ESRCH (no member left) and EPERM (none may be signalled) do not throw. */
function signalGroup(pgid: number, signal: NodeJS.Signals): 'sent' | 'gone' | 'denied' {
  try {
    process.kill(-pgid, signal);
    return 'sent';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH' ? 'gone' : 'denied';
  }
}

/** Polls until no live member of the group is left; false if some remain after `timeoutMs`. */
async function emptiesWithin(pgid: number, timeoutMs: number, pollMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!groupHasLiveMember(pgid)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, left)));
  }
}

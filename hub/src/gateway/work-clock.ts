/**
 * Times the work a frame causes this replica (its decoding, its schema check) for the flood
 * guard's charge (`workCost`). A wall-clock timer also counts the time the process was not running
 * at all (another process on its core, a paused VM): on a busy machine an honest sidecar's log
 * batches were charged several times their work and its connection closed (seen in CI). The
 * process's CPU clock (`process.cpuUsage`, user and system) leaves that out; it counts the
 * process's other threads too (V8's concurrent GC), so the charge is the lesser of the two.
 * Frames under {@link CPU_TIMED_FRAME_BYTES} keep the wall clock alone: a `getrusage` costs about
 * a microsecond, as much as decoding a heartbeat, and `workCeilingMs` bounds what they can count.
 */
export const CPU_TIMED_FRAME_BYTES = 4 * 1024;

/** When a frame's work started, on the clocks {@link workMsSince} reads. */
export interface WorkMark {
  wall: number;
  cpu: NodeJS.CpuUsage | undefined;
}

export function startWork(bytes: number): WorkMark {
  return {
    wall: performance.now(),
    cpu: bytes >= CPU_TIMED_FRAME_BYTES ? process.cpuUsage() : undefined,
  };
}

/** Milliseconds of work since `mark`: the wall clock's, or the CPU clock's when less. */
export function workMsSince(mark: WorkMark): number {
  const wallMs = performance.now() - mark.wall;
  if (mark.cpu === undefined) return wallMs;
  const { user, system } = process.cpuUsage(mark.cpu);
  return Math.min(wallMs, (user + system) / 1000);
}

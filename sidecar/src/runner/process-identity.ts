import { existsSync, readdirSync, readFileSync } from 'node:fs';

/**
 * The process that leads a task's process group, as recorded in the state file: enough for a
 * later sidecar process to tell it from an unrelated process that was given the same pid.
 * Linux only (procfs); elsewhere only the pid is known and nothing is ever signalled on its word.
 */
export interface TaskProcess {
  pid: number;
  /** Field 22 (`starttime`, clock ticks since boot) of `/proc/<pid>/stat`; absent without procfs. */
  startTime?: number;
  /** `/proc/sys/kernel/random/boot_id` at the start: a start time only means something within one boot. */
  bootId?: string;
}

/** The fields of `/proc/<pid>/stat` the sidecar uses. */
export interface ProcStat {
  /** Field 3: `R`, `S`, `D`, `Z` (zombie: exited, not yet reaped), ... */
  state: string;
  /** Field 5: the process group id. */
  pgrp: number;
  /** Field 22: clock ticks since boot when the process started. */
  startTime: number;
}

const PROC = '/proc';

/**
 * Parses a `/proc/<pid>/stat` line. Field 2 (`comm`) is in parentheses and may itself contain
 * spaces and parentheses, so the fields are counted from after the LAST `)`.
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // fields[0] is field 3 (state), so field n is fields[n - 3].
  const fields = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const state = fields[0];
  const pgrp = fields[2];
  const startTime = fields[19];
  if (state === undefined || pgrp === undefined || startTime === undefined) return undefined;
  if (!/^\d+$/.test(pgrp) || !/^\d+$/.test(startTime)) return undefined;
  return { state, pgrp: Number(pgrp), startTime: Number(startTime) };
}

/** Whether procfs is there to identify processes by (Linux). */
export function procfsAvailable(): boolean {
  return existsSync(`${PROC}/self/stat`);
}

/** `/proc/<pid>/stat`, parsed; undefined when there is no such process (or no procfs). */
export function readProcStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`${PROC}/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

let bootIdCache: string | null | undefined;

/** This boot's id, undefined without procfs. */
export function readBootId(): string | undefined {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync(`${PROC}/sys/kernel/random/boot_id`, 'utf8').trim() || null;
    } catch {
      bootIdCache = null;
    }
  }
  return bootIdCache ?? undefined;
}

/**
 * Identifies `pid` for the state file: its start time and the boot id where procfs has them.
 * Read right after the spawn, while the process exists (an exited child stays a zombie, with its
 * stat, until Node reaps it on a later turn of the event loop).
 */
export function identifyProcess(pid: number): TaskProcess {
  const stat = readProcStat(pid);
  if (stat === undefined) return { pid };
  const bootId = readBootId();
  return { pid, startTime: stat.startTime, ...(bootId !== undefined && { bootId }) };
}

/**
 * Whether a process that has not exited is in group `pgid`. A zombie does not count: it runs
 * nothing, and where PID 1 does not reap (some containers) an orphan's zombie stays forever,
 * though `kill(-pgid, 0)` still reaches it.
 */
export function groupHasLiveMember(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  if (!procfsAvailable()) return true;
  for (const name of readdirSync(PROC)) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readProcStat(Number(name));
    if (stat !== undefined && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X') {
      return true;
    }
  }
  return false;
}

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { sleep } from './util';

/** Event loop of the observed process (see redis-io-counter.ts). */
export interface LoopSnapshot {
  activeMs: number;
  idleMs: number;
  /** Delay percentiles since the previous snapshot. */
  delayP50Ms: number;
  delayP99Ms: number;
  delayMaxMs: number;
}

export interface IoSnapshot {
  loop?: LoopSnapshot;
  writes: number;
  bytes: number;
  commands: number;
  byName: Record<string, number>;
}

/**
 * Counts RESP commands (`*<n>\r\n` followed by n bulk strings) in the byte streams a client
 * writes, one parser state per connection.
 */
export class RespCounter {
  writes = 0;
  bytes = 0;
  commands = 0;
  private readonly byName = new Map<string, number>();

  snapshot(): IoSnapshot {
    return {
      writes: this.writes,
      bytes: this.bytes,
      commands: this.commands,
      byName: Object.fromEntries(this.byName),
    };
  }

  /** A feeder for one connection's outgoing bytes. */
  stream(): (chunk: Buffer | string) => void {
    let pending: Buffer = Buffer.alloc(0);
    // parser state: args left in the current command, bytes of a bulk string left to skip
    let argsLeft = 0;
    let argIndex = 0;
    let skip = 0;
    let bulkLen = -1;
    return (chunk) => {
      const data = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      this.bytes += data.length;
      pending = pending.length === 0 ? data : Buffer.concat([pending, data]);
      let at = 0;
      for (;;) {
        if (skip > 0) {
          const n = Math.min(skip, pending.length - at);
          skip -= n;
          at += n;
          if (skip > 0) break;
          continue;
        }
        if (bulkLen >= 0) {
          // the bulk string itself, then CRLF
          if (pending.length - at < bulkLen + 2) {
            if (argIndex === 1) {
              // the command name is short: wait for all of it; long arguments are skipped
              break;
            }
            skip = bulkLen + 2;
            bulkLen = -1;
            continue;
          }
          if (argIndex === 1) {
            const name = pending.toString('latin1', at, at + Math.min(bulkLen, 40)).toLowerCase();
            this.byName.set(name, (this.byName.get(name) ?? 0) + 1);
          }
          at += bulkLen + 2;
          bulkLen = -1;
          continue;
        }
        const eol = pending.indexOf('\r\n', at, 'latin1');
        if (eol < 0) break;
        const type = pending[at];
        const value = Number(pending.toString('latin1', at + 1, eol));
        at = eol + 2;
        if (argsLeft === 0) {
          if (type === 0x2a /* '*' */) {
            this.commands++;
            argsLeft = value;
            argIndex = 0;
          }
          // anything else (inline command): ignored
          continue;
        }
        if (type === 0x24 /* '$' */) {
          argsLeft--;
          argIndex++;
          bulkLen = value;
        }
      }
      pending = at >= pending.length ? Buffer.alloc(0) : pending.subarray(at);
    };
  }
}

/** Asks a process running the counter preload for a snapshot (SIGUSR2) and reads it. */
export async function readIoCounter(pid: number, file: string): Promise<IoSnapshot> {
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    await sleep(5);
    if (!existsSync(file)) continue;
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as IoSnapshot;
    } catch {
      // being written
    }
  }
  throw new Error(`no I/O counter snapshot from pid ${pid}`);
}

/** Event-loop utilization (%) between two snapshots, and the delay seen in that window. */
export function loopWindow(
  before: IoSnapshot,
  after: IoSnapshot,
): { utilizationPct: number; delayP50Ms: number; delayP99Ms: number; delayMaxMs: number } {
  const active = (after.loop?.activeMs ?? 0) - (before.loop?.activeMs ?? 0);
  const idle = (after.loop?.idleMs ?? 0) - (before.loop?.idleMs ?? 0);
  return {
    utilizationPct: Math.round((active / Math.max(1, active + idle)) * 1000) / 10,
    delayP50Ms: after.loop?.delayP50Ms ?? 0,
    delayP99Ms: after.loop?.delayP99Ms ?? 0,
    delayMaxMs: after.loop?.delayMaxMs ?? 0,
  };
}

export function sumIo(snaps: readonly IoSnapshot[]): IoSnapshot {
  const byName: Record<string, number> = {};
  let writes = 0;
  let bytes = 0;
  let commands = 0;
  for (const snap of snaps) {
    writes += snap.writes;
    bytes += snap.bytes;
    commands += snap.commands;
    for (const [name, n] of Object.entries(snap.byName)) byName[name] = (byName[name] ?? 0) + n;
  }
  return { writes, bytes, commands, byName };
}

export function diffIo(before: IoSnapshot, after: IoSnapshot): IoSnapshot {
  const byName: Record<string, number> = {};
  for (const [name, n] of Object.entries(after.byName)) {
    const d = n - (before.byName[name] ?? 0);
    if (d > 0) byName[name] = d;
  }
  return {
    writes: after.writes - before.writes,
    bytes: after.bytes - before.bytes,
    commands: after.commands - before.commands,
    byName,
  };
}

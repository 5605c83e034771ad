import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { chmod, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { makeTempDir } from '../test-support/temp-dir';
import { isProcessGone, waitUntil } from '../test-support/process';
import { reapOrphan } from './orphan-reaper';
import {
  identifyProcess,
  parseProcStat,
  readBootId,
  readProcStat,
  type TaskProcess,
} from './process-identity';

const GRACE_MS = 200;

/** Process groups the tests started, killed after each test whatever it did. */
let groups: number[] = [];

afterEach(() => {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  groups = [];
});

/**
 * Starts `sh -c script` as the leader of its own process group (as the exec runner starts a
 * handler); the script prints the pid of a background child (`$!`) as its first line.
 */
async function startGroup(
  script: string,
): Promise<{ leader: ChildProcess; pid: number; grandchild: number; recorded: TaskProcess }> {
  const leader = spawn('sh', ['-c', script], {
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const pid = leader.pid;
  if (pid === undefined) throw new Error('sh did not start');
  groups.push(pid);
  // Identified at once, as the exec runner does: before the leader could exit and be reaped.
  const recorded = identifyProcess(pid);
  const lines = createInterface({ input: leader.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  lines.close();
  leader.stdout!.destroy();
  return { leader, pid, grandchild: Number(line), recorded };
}

/**
 * Whether `pid` runs and has no SIGTERM or SIGKILL pending. Right after a kill() the target may
 * not have died yet, but the signal shows as pending (a fatal one as SIGKILL) until it does: so
 * this proves, at once and without waiting, that it was not sent a stopping signal.
 */
function runsUnsignalled(pid: number): boolean {
  if (isProcessGone(pid)) return false;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const stopping = (1n << 14n) | (1n << 8n); // bits of SIGTERM (15) and SIGKILL (9)
  return ['SigPnd', 'ShdPnd'].every((field) => {
    const mask = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1];
    return mask !== undefined && (BigInt(`0x${mask}`) & stopping) === 0n;
  });
}

const BOTH_SLEEP = 'sleep 60 & echo $!; sleep 60';

describe('reapOrphan', () => {
  it('terminates the whole group of a recorded leader: the leader and its grandchild are gone', async () => {
    const { pid, grandchild, recorded } = await startGroup(BOTH_SLEEP);
    expect(recorded.startTime).toEqual(expect.any(Number));
    expect(isProcessGone(grandchild)).toBe(false);

    await expect(reapOrphan(recorded, { graceMs: 5000 })).resolves.toBe('terminated');
    await waitUntil(() => isProcessGone(pid), 'the leader is gone', 2000);
    expect(isProcessGone(grandchild)).toBe(true);
  });

  it('kills a group that ignores SIGTERM with SIGKILL once the grace is over', async () => {
    const { pid, grandchild, recorded } = await startGroup(`trap '' TERM; ${BOTH_SLEEP}`);
    const started = Date.now();
    await expect(reapOrphan(recorded, { graceMs: GRACE_MS })).resolves.toBe('killed');
    expect(Date.now() - started).toBeGreaterThanOrEqual(GRACE_MS);
    await waitUntil(() => isProcessGone(pid), 'the leader is gone', 2000);
    expect(isProcessGone(grandchild)).toBe(true);
  });

  it('signals nothing when the leader started at another time than recorded (a reused pid)', async () => {
    const { leader, pid, grandchild, recorded } = await startGroup(BOTH_SLEEP);
    let signalled = false;
    leader.once('exit', () => (signalled = true));
    await expect(
      reapOrphan({ ...recorded, startTime: (recorded.startTime ?? 0) + 1 }, { graceMs: GRACE_MS }),
    ).resolves.toBe('pid-reused');
    expect(signalled).toBe(false);
    expect(runsUnsignalled(pid)).toBe(true);
    expect(runsUnsignalled(grandchild)).toBe(true);
  });

  it('signals nothing without a recorded start time (no procfs where it started)', async () => {
    const { pid, grandchild } = await startGroup(BOTH_SLEEP);
    await expect(reapOrphan({ pid }, { graceMs: GRACE_MS })).resolves.toBe('skipped-unverifiable');
    expect(runsUnsignalled(pid)).toBe(true);
    expect(runsUnsignalled(grandchild)).toBe(true);
  });

  it('signals nothing when the start time was recorded in another boot', async () => {
    const { pid, grandchild, recorded } = await startGroup(BOTH_SLEEP);
    expect(recorded.bootId).toBe(readBootId());
    await expect(
      reapOrphan({ ...recorded, bootId: 'another-boot' }, { graceMs: GRACE_MS }),
    ).resolves.toBe('not-running');
    expect(runsUnsignalled(pid)).toBe(true);
    expect(runsUnsignalled(grandchild)).toBe(true);
  });

  it('signals nothing when the leader exited and left members it can no longer vouch for', async () => {
    const { leader, pid, grandchild, recorded } = await startGroup('sleep 60 & echo $!');
    expect(recorded.startTime).toEqual(expect.any(Number));
    if (leader.exitCode === null) await once(leader, 'exit');
    await waitUntil(() => readProcStat(pid) === undefined, 'the leader is reaped', 2000);
    await expect(reapOrphan(recorded, { graceMs: GRACE_MS })).resolves.toBe('skipped-unverifiable');
    expect(runsUnsignalled(grandchild)).toBe(true);
  });

  it('reports a group that already ended as not running', async () => {
    const { leader, recorded } = await startGroup('echo 0');
    expect(recorded.startTime).toEqual(expect.any(Number));
    if (leader.exitCode === null) await once(leader, 'exit');
    await expect(reapOrphan(recorded, { graceMs: GRACE_MS })).resolves.toBe('not-running');
  });
});

describe('process identity', () => {
  it('parses /proc/<pid>/stat from after the last ")" of the command name', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[0] = 'S';
    expect(parseProcStat(`123 (a) b (c)) ${fields.join(' ')}\n`)).toEqual({
      state: 'S',
      pgrp: 5,
      startTime: 22,
    });
    expect(parseProcStat('123 (truncated')).toBeUndefined();
    expect(parseProcStat('123 (x) S 1 2')).toBeUndefined();
  });

  it('reads the group and start time of a real process whose name holds ") " and "("', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const strange = join(dir, 'a) b (c');
      await copyFile('/bin/sleep', strange);
      await chmod(strange, 0o755);
      const child = spawn(strange, ['60'], { detached: true, stdio: 'ignore' });
      const pid = child.pid as number;
      groups.push(pid);
      await once(child, 'spawn');
      const stat = readProcStat(pid);
      const own = readProcStat(process.pid);
      expect(stat).toEqual({ state: expect.any(String), pgrp: pid, startTime: expect.any(Number) });
      expect(stat?.startTime).toBeGreaterThanOrEqual(own?.startTime ?? Infinity);
      expect(identifyProcess(pid)).toEqual({
        pid,
        startTime: stat?.startTime,
        bootId: readBootId(),
      });
    } finally {
      await cleanup();
    }
  });
});

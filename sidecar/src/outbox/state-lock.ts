import { createHash, randomBytes } from 'node:crypto';
import { link, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readBootId, readProcStat, type TaskProcess } from '../runner/process-identity';

/** Thrown when another live process holds the state directory. */
export class StateDirInUseError extends Error {
  readonly pid: number;
  readonly lockPath: string;

  constructor(lockPath: string, pid: number) {
    super(
      `the state dir is in use by process ${pid} (${lockPath}); run one sidecar per state dir, ` +
        'or delete the lock file if that process is not a sidecar',
    );
    this.name = 'StateDirInUseError';
    this.pid = pid;
    this.lockPath = lockPath;
  }
}

export interface StateLock {
  release(): Promise<void>;
}

/**
 * Contents of the lock files this process holds or is acquiring. A lock naming our own pid is
 * stale (left by an earlier process that had the same pid, as happens after a reboot or in a
 * restarted container) unless it is one of these.
 */
const ours = new Set<string>();

/**
 * Takes `<dir>/sidecar.lock` so two sidecars never write the same outbox. The file holds our pid
 * on its first line (all an older sidecar reads), then our start time and boot id (from procfs)
 * and a random nonce, so that no two locks ever have the same content. A lock is held while its
 * process is alive with the recorded start time on this boot; otherwise it is stale (the holder
 * died) and is taken over. Old pid-only locks, and all locks without procfs, are judged by pid.
 *
 * Every file is written under a private name first and then linked or renamed into place, so no
 * one ever reads a half-written lock.
 */
export async function acquireStateLock(dir: string): Promise<StateLock> {
  const lockPath = join(dir, 'sidecar.lock');
  const content = describeSelf();
  const tmp = `${lockPath}.${digest(content)}.tmp`;
  ours.add(content);
  try {
    await writeFile(tmp, content, { flag: 'wx', mode: 0o600 });
    // Each turn that does not end means the lock changed under us: someone else made progress.
    for (let attempt = 0; attempt < 10; attempt++) {
      if ((await tryLink(tmp, lockPath)) || (await takeOver(lockPath, lockPath, tmp))) {
        return { release: () => release(lockPath, content) };
      }
    }
    throw new Error(`could not take ${lockPath}: it kept changing`);
  } catch (err) {
    ours.delete(content);
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * Replaces the file at `path` (the lock, or a claim on it) by `tmp` if it is stale; false when it
 * changed or vanished meanwhile. Removing or renaming over a file judged stale a moment ago could
 * destroy a live lock that replaced it since, so every contender first claims the stale content
 * by creating `sidecar.lock.claim-<digest of that content>` exclusively. Only the claimant changes
 * a file holding that content (its owner is dead, and a link never lands on an existing file), and
 * a content never comes back, so the claimant can check that the file still holds the content
 * and then rename over it. A claim left by a dead claimant is stale in turn and is taken over the
 * same way.
 */
async function takeOver(lockPath: string, path: string, tmp: string): Promise<boolean> {
  const stale = await readIfExists(path);
  if (stale === undefined) return false;
  const holder = liveHolder(stale);
  if (holder !== undefined) throw new StateDirInUseError(lockPath, holder);
  const claim = `${lockPath}.claim-${digest(stale)}`;
  if (!(await tryLink(tmp, claim)) && !(await takeOver(lockPath, claim, tmp))) return false;
  // Renaming consumes the name, and `tmp` is still needed: rename a second link to it instead.
  const spare = `${tmp}.${digest(path)}`;
  try {
    if ((await readIfExists(path)) !== stale) return false;
    await link(tmp, spare);
    await rename(spare, path);
    return true;
  } finally {
    await rm(spare, { force: true });
    await rm(claim, { force: true });
  }
}

/**
 * Removes the lock if it is still ours. While we live nobody judges our lock stale, so it cannot
 * change between the read and the removal; if it is not ours, someone removed it by hand and a
 * later sidecar took the dir, and its lock stays.
 */
async function release(lockPath: string, content: string): Promise<void> {
  if (!ours.has(content)) return;
  if ((await readIfExists(lockPath)) === content) await rm(lockPath, { force: true });
  ours.delete(content);
}

/** Our lock file's content: see acquireStateLock. */
function describeSelf(): string {
  const startTime = readProcStat(process.pid)?.startTime;
  const bootId = readBootId();
  const fields = [
    ...(startTime !== undefined ? [`start=${startTime}`] : []),
    ...(bootId !== undefined ? [`boot=${bootId}`] : []),
    `nonce=${randomBytes(8).toString('hex')}`,
  ];
  return `${process.pid}\n${fields.join(' ')}\n`;
}

/** The lock file's holder as recorded; undefined when the content is not a lock (stale). */
function parseLock(content: string): TaskProcess | undefined {
  const [first = '', second = ''] = content.split('\n');
  if (!/^\d+$/.test(first.trim())) return undefined;
  const fields = new Map(
    [...second.matchAll(/(\w+)=(\S+)/g)].map(([, key, value]) => [key, value]),
  );
  const start = fields.get('start');
  const bootId = fields.get('boot');
  return {
    pid: Number(first),
    ...(start !== undefined && /^\d+$/.test(start) && { startTime: Number(start) }),
    ...(bootId !== undefined && { bootId }),
  };
}

/** The pid of the live process holding a lock with this content; undefined when it is stale. */
function liveHolder(content: string): number | undefined {
  const lock = parseLock(content);
  if (lock === undefined || lock.pid <= 0) return undefined;
  if (lock.pid === process.pid) return ours.has(content) ? lock.pid : undefined;
  const bootId = readBootId();
  if (lock.bootId !== undefined && bootId !== undefined && lock.bootId !== bootId) return undefined;
  const stat = readProcStat(lock.pid);
  if (stat !== undefined && lock.startTime !== undefined) {
    // A zombie has exited: it holds nothing.
    const same = stat.startTime === lock.startTime && stat.state !== 'Z' && stat.state !== 'X';
    return same ? lock.pid : undefined;
  }
  // No procfs, an old pid-only lock, or a process procfs hides from us (hidepid): by pid alone.
  return isAlive(lock.pid) ? lock.pid : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Links `from` to `to`; false when `to` exists. Unlike open('wx'), `to` appears complete. */
async function tryLink(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

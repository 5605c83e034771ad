import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

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
 * Takes `<dir>/sidecar.lock` (created exclusively, holding our pid) so two sidecars never write
 * the same outbox. A lock whose pid is no longer alive is stale (the holder crashed) and is taken
 * over.
 */
export async function acquireStateLock(dir: string): Promise<StateLock> {
  const lockPath = join(dir, 'sidecar.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return { release: () => rm(lockPath, { force: true }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
      throw new StateDirInUseError(lockPath, holder);
    }
    await rm(lockPath, { force: true });
  }
  throw new Error(`could not take ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { build } from 'esbuild';
import { procfsAvailable, readBootId, readProcStat } from '../runner/process-identity';
import { makeTempDir } from '../test-support/temp-dir';
import { StateDirInUseError, acquireStateLock } from './state-lock';

let dir: string;
let cleanup: () => Promise<void>;
const children: ChildProcess[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await cleanup();
});

const lockPath = (): string => join(dir, 'sidecar.lock');
/** A boot id no machine has: a lock recorded on it is from another boot. */
const OTHER_BOOT = '00000000-0000-0000-0000-000000000000';
const onLinux = procfsAvailable() ? it : it.skip;

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await once(child, 'exit');
  return child.pid ?? 0;
}

/** A live process that is not a sidecar. */
async function unrelatedProcess(): Promise<number> {
  const child = spawn('sleep', ['30']);
  children.push(child);
  await once(child, 'spawn');
  return child.pid ?? 0;
}

function startTimeOf(pid: number): number {
  const stat = readProcStat(pid);
  if (stat === undefined) throw new Error(`no /proc/${pid}/stat`);
  return stat.startTime;
}

/** Lock content in the current format. */
function lockText(
  pid: number,
  startTime: number,
  bootId: string,
  nonce = 'feedfacefeedface',
): string {
  return `${pid}\nstart=${startTime} boot=${bootId} nonce=${nonce}\n`;
}

describe('acquireStateLock', () => {
  onLinux('records the pid, start time and boot id, and removes only its own lock', async () => {
    const lock = await acquireStateLock(dir);
    const text = await readFile(lockPath(), 'utf8');
    const start = startTimeOf(process.pid);
    expect(text).toMatch(
      new RegExp(`^${process.pid}\\nstart=${start} boot=${readBootId()} nonce=[0-9a-f]{16}\\n$`),
    );
    expect(await readdir(dir)).toEqual(['sidecar.lock']);
    await lock.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it('on release leaves a lock that is no longer its own', async () => {
    const lock = await acquireStateLock(dir);
    // Someone deleted our lock by hand and another sidecar took the dir.
    const other = `${await unrelatedProcess()}\n`;
    await writeFile(lockPath(), other);
    await lock.release();
    expect(await readFile(lockPath(), 'utf8')).toBe(other);
  });

  it('takes over an old pid-only lock naming its own pid (left by an earlier process)', async () => {
    await writeFile(lockPath(), `${process.pid}\n`);
    const lock = await acquireStateLock(dir);
    expect(await readFile(lockPath(), 'utf8')).toMatch(new RegExp(`^${process.pid}\\n.*nonce=`));
    await lock.release();
    expect(await readdir(dir)).toEqual([]);
  });

  onLinux('takes over a lock naming its own pid with another start time', async () => {
    const stale = lockText(process.pid, startTimeOf(process.pid) + 1, readBootId() ?? '');
    await writeFile(lockPath(), stale);
    const lock = await acquireStateLock(dir);
    expect(await readFile(lockPath(), 'utf8')).not.toBe(stale);
    await lock.release();
  });

  onLinux('takes over a lock whose pid now belongs to another process', async () => {
    const pid = await unrelatedProcess();
    await writeFile(lockPath(), lockText(pid, startTimeOf(pid) - 1, readBootId() ?? ''));
    const lock = await acquireStateLock(dir);
    await lock.release();
  });

  onLinux('takes over a lock from another boot', async () => {
    const pid = await unrelatedProcess();
    await writeFile(lockPath(), lockText(pid, startTimeOf(pid), OTHER_BOOT));
    const lock = await acquireStateLock(dir);
    await lock.release();
  });

  onLinux('refuses a lock whose process is alive with the recorded start time', async () => {
    const pid = await unrelatedProcess();
    const held = lockText(pid, startTimeOf(pid), readBootId() ?? '');
    await writeFile(lockPath(), held);
    await expect(acquireStateLock(dir)).rejects.toMatchObject({
      name: 'StateDirInUseError',
      pid,
    });
    expect(await readFile(lockPath(), 'utf8')).toBe(held);
  });

  it('still refuses an old pid-only lock naming another live process', async () => {
    const pid = await unrelatedProcess();
    await writeFile(lockPath(), `${pid}\n`);
    await expect(acquireStateLock(dir)).rejects.toMatchObject({ pid });
  });

  describe('claims on a stale lock', () => {
    const claimPath = (stale: string): string =>
      join(
        dir,
        `sidecar.lock.claim-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`,
      );

    onLinux('takes over a claim left by a dead claimant', async () => {
      const stale = lockText(await deadPid(), 1, OTHER_BOOT);
      await writeFile(lockPath(), stale);
      await writeFile(
        claimPath(stale),
        lockText(await deadPid(), 2, OTHER_BOOT, 'abad1deaabad1dea'),
      );
      const lock = await acquireStateLock(dir);
      expect(await readdir(dir)).toEqual(['sidecar.lock']);
      await lock.release();
    });

    onLinux('refuses while a live process claims the stale lock', async () => {
      const stale = lockText(await deadPid(), 1, OTHER_BOOT);
      await writeFile(lockPath(), stale);
      const claimant = await unrelatedProcess();
      const claimed = lockText(claimant, startTimeOf(claimant), readBootId() ?? '');
      await writeFile(claimPath(stale), claimed);
      await expect(acquireStateLock(dir)).rejects.toMatchObject({ pid: claimant });
      expect(await readFile(lockPath(), 'utf8')).toBe(stale);
    });
  });

  it('gives a stale lock to exactly one of many concurrent takers', async () => {
    const pid = await deadPid();
    for (let round = 0; round < 200; round++) {
      await writeFile(
        lockPath(),
        lockText(pid, 1, OTHER_BOOT, round.toString(16).padStart(16, '0')),
      );
      const outcomes = await Promise.allSettled(
        Array.from({ length: 8 }, () => acquireStateLock(dir)),
      );
      const won = outcomes.flatMap((outcome) =>
        outcome.status === 'fulfilled' ? [outcome.value] : [],
      );
      const lost = outcomes.flatMap((outcome) =>
        outcome.status === 'rejected' ? [outcome.reason as unknown] : [],
      );
      expect({ round, won: won.length }).toEqual({ round, won: 1 });
      for (const reason of lost) expect(reason).toBeInstanceOf(StateDirInUseError);
      for (const lock of won) await lock.release();
      expect({ round, left: await readdir(dir) }).toEqual({ round, left: [] });
    }
  });

  describe('against sidecars in other processes', () => {
    let bundleDir: string;
    let bundleCleanup: () => Promise<void>;
    let bundle: string;

    beforeAll(async () => {
      ({ dir: bundleDir, cleanup: bundleCleanup } = await makeTempDir());
      bundle = join(bundleDir, 'lock-child.js');
      // Takes the lock on `take`, prints `locked` or `in-use`; releases on `release`.
      const contents = `
        import { createInterface } from 'node:readline';
        import { acquireStateLock, StateDirInUseError } from './state-lock';
        let lock;
        createInterface({ input: process.stdin }).on('line', async (line) => {
          if (line === 'take') {
            try {
              lock = await acquireStateLock(process.argv[2]);
              console.log('locked');
            } catch (err) {
              console.log(err instanceof StateDirInUseError ? 'in-use' : 'error ' + err.message);
            }
          } else if (line === 'release') {
            await lock?.release();
            lock = undefined;
            console.log('released');
          }
        });
        console.log('ready');
      `;
      await build({
        stdin: { contents, resolveDir: __dirname, loader: 'ts' },
        bundle: true,
        platform: 'node',
        outfile: bundle,
        logLevel: 'silent',
      });
    });
    afterAll(async () => {
      await bundleCleanup();
    });

    interface LockChild {
      pid: number;
      ask(command: string): Promise<string>;
    }

    async function startChild(): Promise<LockChild> {
      const child = spawn(process.execPath, [bundle, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
      children.push(child);
      const lines = createInterface({ input: child.stdout! });
      const answers: Array<(line: string) => void> = [];
      const ready = new Promise<string>((resolve) => answers.push(resolve));
      lines.on('line', (line) => answers.shift()?.(line));
      expect(await ready).toBe('ready');
      return {
        pid: child.pid ?? 0,
        ask: (command) => {
          const answer = new Promise<string>((resolve) => answers.push(resolve));
          child.stdin!.write(`${command}\n`);
          return answer;
        },
      };
    }

    it('refuses a lock held by another live sidecar, and takes it over once it is killed', async () => {
      const holder = await startChild();
      expect(await holder.ask('take')).toBe('locked');
      await expect(acquireStateLock(dir)).rejects.toMatchObject({ pid: holder.pid });
      const child = children.find((candidate) => candidate.pid === holder.pid)!;
      child.kill('SIGKILL');
      await once(child, 'exit');
      const lock = await acquireStateLock(dir);
      await lock.release();
    });

    it('gives a stale lock to exactly one of several sidecars starting together', async () => {
      const takers = await Promise.all(Array.from({ length: 4 }, () => startChild()));
      const pid = await deadPid();
      for (let round = 0; round < 100; round++) {
        await writeFile(
          lockPath(),
          lockText(pid, 1, OTHER_BOOT, round.toString(16).padStart(16, '0')),
        );
        const answers = await Promise.all(takers.map((taker) => taker.ask('take')));
        expect({ round, answers: [...answers].sort() }).toEqual({
          round,
          answers: ['in-use', 'in-use', 'in-use', 'locked'],
        });
        const winner = takers[answers.indexOf('locked')]!;
        expect((await readFile(lockPath(), 'utf8')).split('\n')[0]).toBe(String(winner.pid));
        await Promise.all(takers.map((taker) => taker.ask('release')));
        expect({ round, left: await readdir(dir) }).toEqual({ round, left: [] });
      }
    });
  });
});

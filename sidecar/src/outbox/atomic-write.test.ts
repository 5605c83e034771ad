import { chmod, mkdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { runInChild, traceSyscalls, type TracedCall } from '../test-support/syscall-trace';
import { makeTempDir } from '../test-support/temp-dir';

// What reaches the disk, and in which order, is seen in the system calls of a real process
// (strace): a crash cannot be staged here, the calls that make a crash harmless can be checked.

let dir: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  const made = await makeTempDir();
  cleanup = made.cleanup;
  dir = await realpath(made.dir); // strace prints the paths of fds resolved
});
afterEach(async () => {
  await cleanup();
});

const FILE_CALLS = ['mkdir', 'fsync', 'rename', 'renameat', 'renameat2'];

/** The path of the fd a call such as `fsync(20</tmp/x>) = 0` succeeded on. */
function syncedPath(call: TracedCall): string | undefined {
  if (call.name !== 'fsync') return undefined;
  return /^\(\d+<(.*)>\) = 0$/.exec(call.rest)?.[1];
}

describe('a state dir the outbox creates', () => {
  it('is synced into its parent, as is each new directory above it', async () => {
    const stateDir = join(dir, 'a', 'b', 'state');
    const calls = await traceSyscalls(
      `import { Outbox } from './outbox';
       import { testLogger } from '../test-support/logger';
       void Outbox.open(${JSON.stringify(stateDir)}, testLogger());`,
      __dirname,
      FILE_CALLS,
    );
    const made = calls.findIndex(
      (call) =>
        call.name === 'mkdir' && call.rest.startsWith(`("${stateDir}"`) && / = 0$/.test(call.rest),
    );
    expect(made).toBeGreaterThanOrEqual(0);
    const syncedAfter = calls.slice(made + 1).flatMap((call) => syncedPath(call) ?? []);
    // each new directory's entry is in its parent: the parents of state, b and a
    expect(syncedAfter.sort()).toEqual([dir, join(dir, 'a'), join(dir, 'a', 'b')].sort());
  });

  it('is made in a parent it may write but not read (a drop box), which it cannot open to sync', async () => {
    // as root, reads are never refused: the sidecar runs as `nobody` then, in root's drop box
    const asRoot = process.getuid?.() === 0;
    const nobody = { uid: 65534, gid: 65534 };
    const dropBox = join(dir, 'drop');
    await mkdir(dropBox);
    await chmod(dropBox, asRoot ? 0o1733 : 0o333); // write and search, no read, for the sidecar
    if (asRoot) await chmod(dir, 0o755);
    const stateDir = join(dropBox, 'state');
    await runInChild(
      `import { Outbox } from './outbox';
       import { testLogger } from '../test-support/logger';
       void Outbox.open(${JSON.stringify(stateDir)}, testLogger());`,
      __dirname,
      asRoot ? nobody : undefined,
    );
    expect((await stat(stateDir)).isDirectory()).toBe(true);
  });

  it('is not synced again when it was there already', async () => {
    const stateDir = join(dir, 'state');
    await mkdir(stateDir, { mode: 0o700 });
    const calls = await traceSyscalls(
      `import { Outbox } from './outbox';
       import { testLogger } from '../test-support/logger';
       void Outbox.open(${JSON.stringify(stateDir)}, testLogger());`,
      __dirname,
      FILE_CALLS,
    );
    expect(calls.flatMap((call) => syncedPath(call) ?? [])).toEqual([]);
  });
});

describe('writeFileAtomic', () => {
  it('syncs the new content before the rename, and the directory after it', async () => {
    const path = join(dir, 'state.json');
    const calls = await traceSyscalls(
      `import { writeFileAtomic } from './atomic-write';
       void writeFileAtomic(${JSON.stringify(path)}, 'content');`,
      __dirname,
      FILE_CALLS,
    );
    const renamed = calls.findIndex(
      (call) => call.name.startsWith('rename') && call.rest.includes(`"${path}"`),
    );
    expect(renamed).toBeGreaterThanOrEqual(0);
    const temp = /"([^"]+)"/.exec(calls[renamed]?.rest ?? '')?.[1] ?? '';
    expect(temp).toMatch(/\.state\.json\.tmp-/);
    const synced = calls.map(syncedPath);
    expect(synced.slice(0, renamed)).toContain(temp);
    expect(synced.slice(renamed + 1)).toEqual([dir]);
  });
});

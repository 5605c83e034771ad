import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

/** Prefix of the temporary files {@link writeFileAtomic} leaves behind only if it crashes mid-write. */
function tempPrefix(path: string): string {
  return `.${basename(path)}.tmp-`;
}

/**
 * Removes the temporary files of `path` that a process killed in {@link writeFileAtomic} left
 * (each holds part of what was being written). Only for a file no live process is writing.
 */
export async function removeLeftoverTempFiles(path: string): Promise<void> {
  const dir = dirname(path);
  const prefix = tempPrefix(path);
  for (const name of await readdir(dir)) {
    if (name.startsWith(prefix)) await rm(join(dir, name), { force: true });
  }
}

/**
 * Replaces `path` with `data` so that after a crash at any point the file holds either the old or
 * the new content, never a mix: write a temporary file in the same directory, fsync it, rename it
 * over `path` (atomic within one filesystem), then fsync the directory so the rename itself is
 * durable.
 */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `${tempPrefix(path)}${process.pid}-${randomBytes(4).toString('hex')}`);
  const file = await open(tmp, 'w', mode);
  try {
    await file.writeFile(data, 'utf8');
    await file.sync();
  } catch (err) {
    await file.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await file.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDirectory(dir);
}

/**
 * `mkdir -p dir` whose new directories survive a crash: a directory's entry lives in its parent,
 * and until the parent is fsynced a power loss can take the new directory away, with every file
 * written durably inside it. Each directory this call created is therefore synced into its parent.
 */
export async function mkdirDurable(dir: string, mode: number): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode });
  if (first === undefined) return; // it was there: nothing new to make durable
  const firstCreated = resolve(first);
  for (let created = resolve(dir); ; created = dirname(created)) {
    await syncDirectory(dirname(created)).catch((err: unknown) => {
      // creating in a directory takes write and search permission, syncing it read: one without
      // read (a drop box, mode 1733) is as durable as its filesystem makes it by itself
      if ((err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
    });
    if (created === firstCreated || created === dirname(created)) return;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch (err) {
    // Some filesystems cannot fsync a directory; the rename is then as durable as they allow.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EPERM' && code !== 'EISDIR') throw err;
  } finally {
    await handle.close();
  }
}

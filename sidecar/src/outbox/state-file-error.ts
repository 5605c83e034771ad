/**
 * The state dir or `state.json` cannot be used: a directory where the file should be, a file
 * or directory the sidecar's user may not read or write, or a state file of a newer version (left
 * by a newer sidecar). A human must fix it, so the CLI prints this one line, naming the path and
 * what to do, and exits 2 (like a bad option).
 */
export class StateFileError extends Error {
  readonly path: string;
  readonly code: string;

  constructor(path: string, code: string, message: string) {
    super(message);
    this.name = 'StateFileError';
    this.path = path;
    this.code = code;
  }
}

/** Errno codes of a path the sidecar's user cannot use as it is (not a transient failure). */
const UNUSABLE = new Set(['EISDIR', 'ENOTDIR', 'EACCES', 'EPERM', 'EROFS', 'EEXIST']);

/**
 * `err` as a {@link StateFileError} about `path` (`what`: "the state file", "the state dir")
 * when its errno says the path is unusable as it is; anything else unchanged.
 */
export function asStateFileError(err: unknown, path: string, what: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string' || !UNUSABLE.has(code)) return err;
  const user = `the sidecar's user (uid ${process.getuid?.() ?? '?'})`;
  const fix =
    code === 'EISDIR'
      ? `${path} is a directory, not ${what}: move it out of the way (the sidecar creates the file)`
      : code === 'ENOTDIR' || code === 'EEXIST'
        ? `${path} is not a usable directory for ${what} (${code}): a file is in the way; move it, or choose another --state-dir`
        : code === 'EROFS'
          ? `${path} is on a read-only file system (${code}): choose a writable --state-dir`
          : `${user} may not read or write ${path} (${code}): give it to that user (chown, chmod 600 for a file, 700 for a directory), or choose another --state-dir`;
  return new StateFileError(path, code, fix);
}

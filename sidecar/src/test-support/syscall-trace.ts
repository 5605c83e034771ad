import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { makeTempDir } from './temp-dir';

/** One system call a traced process made, as strace printed it (`-y`: fds with their paths). */
export interface TracedCall {
  name: string;
  /** The arguments and result, e.g. `(20</tmp/x>) = 0`. */
  rest: string;
}

/** The user a child process runs as (the caller must be root to name another). */
export interface ChildUser {
  uid: number;
  gid: number;
}

/**
 * Runs `source` (TypeScript, imports resolved from `resolveDir`, bundled by esbuild as the sidecar
 * is) in a child `node`, the command `wrap` puts around it, then `collect`s what it left in the
 * child's temporary dir; rejects when it exits with a failure. The bundle is readable by any user,
 * for a child that runs as another.
 */
async function runBundled<T>(
  source: string,
  resolveDir: string,
  run: {
    wrap: (dir: string, node: string[]) => string[];
    collect: (dir: string) => Promise<T>;
    user?: ChildUser;
  },
): Promise<T> {
  const { dir, cleanup } = await makeTempDir();
  try {
    const bundle = join(dir, 'script.js');
    await build({
      stdin: { contents: source, resolveDir, loader: 'ts', sourcefile: 'script.ts' },
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      outfile: bundle,
      logLevel: 'silent',
    });
    await chmod(dir, 0o755);
    const [command = '', ...args] = run.wrap(dir, [process.execPath, bundle]);
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], ...run.user });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`child process exited with ${String(code)}: ${stderr}`);
    return await run.collect(dir);
  } finally {
    await cleanup();
  }
}

/** Runs `source` as {@link runBundled} does, as `user` when given. */
export async function runInChild(
  source: string,
  resolveDir: string,
  user?: ChildUser,
): Promise<void> {
  await runBundled(source, resolveDir, {
    wrap: (_dir, node) => node,
    collect: () => Promise.resolve(),
    ...(user ? { user } : {}),
  });
}

/**
 * Runs `source` as {@link runBundled} does, under `strace -f`, and returns the calls among
 * `syscalls` it made, in order, from every thread (libuv runs file system calls on its pool). The
 * child is strace's own, so no permission to attach to another process is needed.
 */
export async function traceSyscalls(
  source: string,
  resolveDir: string,
  syscalls: string[],
): Promise<TracedCall[]> {
  const trace = await runBundled(source, resolveDir, {
    wrap: (dir, node) => [
      'strace',
      ...['-f', '-y', '-qq', '-e', `trace=${syscalls.join(',')}`, '-o', join(dir, 'trace.txt')],
      ...node,
    ],
    collect: (dir) => readFile(join(dir, 'trace.txt'), 'utf8'),
  });
  return trace.split('\n').flatMap((line) => {
    // `<pid>  name(args) = result`; signals and exits (`+++`, `---`) are not calls
    const call = /^\d+\s+(\w+)(\(.*)$/.exec(line);
    return call ? [{ name: call[1] ?? '', rest: call[2] ?? '' }] : [];
  });
}

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { makeTempDir } from './temp-dir';

/** One system call a traced process made, as strace printed it (`-y`: fds with their paths). */
export interface TracedCall {
  name: string;
  /** The arguments and result, e.g. `(20</tmp/x>) = 0`. */
  rest: string;
}

/**
 * Runs `source` (TypeScript, imports resolved from `resolveDir`, bundled by esbuild as the sidecar
 * is) in a child `node` under `strace -f` and returns the calls among `syscalls` it made, in order,
 * from every thread (libuv runs file system calls on its pool). The child is strace's own, so no
 * permission to attach to another process is needed. Rejects when either exits with a failure.
 */
export async function traceSyscalls(
  source: string,
  resolveDir: string,
  syscalls: string[],
): Promise<TracedCall[]> {
  const { dir, cleanup } = await makeTempDir();
  try {
    const bundle = join(dir, 'traced.js');
    await build({
      stdin: { contents: source, resolveDir, loader: 'ts', sourcefile: 'traced.ts' },
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      outfile: bundle,
      logLevel: 'silent',
    });
    const trace = join(dir, 'trace.txt');
    const args = ['-f', '-y', '-qq', '-e', `trace=${syscalls.join(',')}`, '-o', trace];
    const child = spawn('strace', [...args, process.execPath, bundle], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`traced process exited with ${String(code)}: ${stderr}`);
    const lines = (await readFile(trace, 'utf8')).split('\n');
    await rm(trace);
    return lines.flatMap((line) => {
      // `<pid>  name(args) = result`; signals and exits (`+++`, `---`) are not calls
      const call = /^\d+\s+(\w+)(\(.*)$/.exec(line);
      return call ? [{ name: call[1] ?? '', rest: call[2] ?? '' }] : [];
    });
  } finally {
    await cleanup();
  }
}

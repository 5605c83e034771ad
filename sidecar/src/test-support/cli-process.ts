import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';

/**
 * The CLI as users run it: the esbuild bundle (the same build script as `npm run bundle`),
 * started as real processes.
 */

/** Bundles the CLI into `dir/cli.js` and returns its path. */
export async function buildBundle(dir: string): Promise<string> {
  const bundle = join(dir, 'cli.js');
  const build = spawn(
    process.execPath,
    [join(__dirname, '..', '..', 'build.mjs'), '--outfile', bundle],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  build.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(build, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`bundling the CLI failed (exit ${String(code)}): ${stderr}`);
  return bundle;
}

export interface CliRun {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout: () => string;
  stderr: () => string;
}

/** Started CLI processes, so a test's cleanup can kill whatever is left. */
export class CliProcesses {
  private readonly children: ChildProcess[] = [];

  constructor(private readonly bundle: () => string) {}

  /**
   * Starts `agentcom-sidecar ...args` with exactly `env` (plus PATH); `stdin` is written then
   * closed. `launcher`: a command (and its arguments) that runs node, e.g. `setpriv ... --`.
   */
  start(
    args: string[],
    env: Record<string, string>,
    stdin?: string,
    launcher: string[] = [],
  ): CliRun {
    const command = [...launcher, process.execPath, this.bundle(), ...args];
    const child = spawn(command[0]!, command.slice(1), {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    this.children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    if (stdin !== undefined) child.stdin?.end(stdin);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
      (resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
      },
    );
    return { child, exited, stdout: () => stdout, stderr: () => stderr };
  }

  /** Runs a short command to its end. */
  async run(
    args: string[],
    env: Record<string, string>,
    stdin?: string,
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const run = this.start(args, env, stdin);
    const { code } = await run.exited;
    return { code, stdout: run.stdout(), stderr: run.stderr() };
  }

  /** SIGKILLs every process still running and waits for it. */
  async killAll(): Promise<void> {
    for (const child of this.children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }
  }
}

import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { watchProcess } from './group-process';
import { ProcessGroup } from './process-group';

export interface GroupLeaderOptions<Stdin extends 'pipe' | 'ignore'> {
  /** The configured command; never anything from the hub. */
  argv: readonly string[];
  /** What the command is, for the error when none is configured (`no <what> configured`). */
  what: string;
  env: Readonly<Record<string, string>>;
  /** `pipe` for a command the task is written to, `ignore` for one that reads nothing. */
  stdin: Stdin;
  /** SIGTERM → SIGKILL delay when the group is terminated. */
  killGraceMs: number;
}

export type GroupLeaderChild<Stdin extends 'pipe' | 'ignore'> = ChildProcessByStdio<
  Stdin extends 'pipe' ? Writable : null,
  Readable,
  Readable
>;

/** A runner's command, started as the leader of a process group of its own. */
export interface GroupLeader<Stdin extends 'pipe' | 'ignore'> {
  /** `argv[0]`, as log lines and failure messages name the command. */
  readonly command: string;
  readonly child: GroupLeaderChild<Stdin>;
  /**
   * The group, as soon as there is a pid: the process exists and leads its group already (spawn
   * returns after the exec), so a stop or killNow from now on reaches it, not only once its
   * `spawn` event came.
   */
  readonly group: ProcessGroup | undefined;
  /** Settles with the group once the process runs, or with why it could not be started. */
  readonly started: Promise<{ group: ProcessGroup } | { failure: string }>;
  /** The exit code and signal, once it exited. */
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
}

/**
 * Spawns `argv` without a shell, detached: it leads a process group of its own, so that stopping
 * the task terminates whatever the command started too. Synchronous: the caller can still act in
 * the turn of the spawn (an exited child is not reaped before a later turn).
 */
export function spawnGroupLeader<Stdin extends 'pipe' | 'ignore'>(
  options: GroupLeaderOptions<Stdin>,
): GroupLeader<Stdin> {
  const [command, ...args] = options.argv;
  if (command === undefined) throw new Error(`no ${options.what} configured`);
  // spawn's types follow a literal stdio only; GroupLeaderChild is what this stdio gives
  const child = spawn(command, args, {
    shell: false,
    detached: true,
    stdio: [options.stdin, 'pipe', 'pipe'],
    env: options.env,
  }) as GroupLeaderChild<Stdin>;
  const { startFailure, exited } = watchProcess(child);
  const group =
    child.pid === undefined ? undefined : new ProcessGroup(child.pid, options.killGraceMs);
  const started = startFailure.then((failure) =>
    failure !== undefined || group === undefined
      ? { failure: failure ?? 'no process was created' }
      : { group },
  );
  return { command, child, group, started, exited };
}

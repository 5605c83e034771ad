import type { ChildProcess } from 'node:child_process';
import { errorText } from '../error-text';

/** A process just spawned, watched from the same turn so no event is missed. */
export interface WatchedProcess {
  /** Settles once the process runs (undefined), or with why it could not be started. */
  readonly startFailure: Promise<string | undefined>;
  /** The exit code and signal, once it exited. */
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
}

/**
 * Watches a task's process (both runners start theirs without a shell, leading a process group
 * of its own). Call it in the turn that spawned `child`.
 */
export function watchProcess(child: ChildProcess): WatchedProcess {
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.once('exit', (code, signal) => resolve([code, signal]));
  });
  const startFailure = new Promise<string | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (err) => resolve(errorText(err)));
  });
  return { startFailure, exited };
}

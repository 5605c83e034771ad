import { mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import type { LogLevel } from './config';

export type { Logger } from 'pino';

/**
 * Paths pino blanks out, in case a token ever reaches a log call: the agent's hub token and the
 * assignment (fencing) tokens are never written to logs.
 */
const REDACT = ['token', '*.token', 'auth.token', 'auth.current.token'];

/**
 * The root logger: JSON, one line per event, to stderr (stdout stays free for commands such as
 * `version`) or appended to `logFile` (created owner-only, with its directory, if missing), written synchronously so
 * the last line before an exit is not lost. No transport: pino transports load worker files by
 * path, which the esbuild bundle does not ship. Throws (the errno error: `code` names the cause)
 * if `logFile` cannot be opened.
 */
export function createLogger(level: LogLevel, agentId: string, logFile?: string): Logger {
  const destination = pino.destination({
    fd: logFile === undefined ? 2 : openLogFile(logFile),
    sync: true,
  });
  return pino(
    { level, base: { agentId }, redact: { paths: REDACT, censor: '[redacted]' } },
    destination,
  );
}

/** Opens `file` for appending (created 0600), creating its missing directories first. */
function openLogFile(file: string): number {
  makeDirs(dirname(file));
  return openSync(file, 'a', 0o600);
}

/**
 * `mkdir -p`, by hand: Node's `mkdirSync(dir, { recursive: true })` never returns, spinning at
 * full CPU, when a mkdir answers ENOENT although the parent exists (any path under `/proc`).
 * Here a second ENOENT after the parent was made (or found) is final. An existing non-directory
 * is left for the open to report (ENOTDIR).
 */
function makeDirs(dir: string): void {
  try {
    mkdirSync(dir);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  makeDirs(dirname(dir));
  try {
    mkdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // made meanwhile: fine
  }
}

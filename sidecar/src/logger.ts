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
 * path, which the esbuild bundle does not ship. Throws if `logFile` cannot be opened.
 */
export function createLogger(level: LogLevel, agentId: string, logFile?: string): Logger {
  const destination =
    logFile === undefined
      ? pino.destination({ fd: 2, sync: true })
      : pino.destination({ dest: logFile, append: true, sync: true, mkdir: true, mode: 0o600 });
  return pino(
    { level, base: { agentId }, redact: { paths: REDACT, censor: '[redacted]' } },
    destination,
  );
}

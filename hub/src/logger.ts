import { pino, type Logger } from 'pino';

export type { Logger };

/** Paths redacted from every log line: tokens and the admin key never reach the logs. */
export const REDACT_PATHS = [
  'token',
  'adminKey',
  '*.token',
  '*.adminKey',
  'req.headers.authorization',
  'headers.authorization',
  'auth.token',
];

/** The hub's root logger: JSON lines with the replica id on each. */
export function createLogger(options: { level: string; hubId: string }): Logger {
  return pino({
    level: options.level,
    base: { hub: options.hubId },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  });
}

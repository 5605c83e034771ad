import { Writable } from 'node:stream';
import pino from 'pino';
import type { Logger } from '../logger';

/** A logger for tests: silent unless TEST_LOG_LEVEL is set (e.g. TEST_LOG_LEVEL=debug). */
export function testLogger(): Logger {
  return pino(
    { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A real pino logger whose JSON lines are kept in memory, for tests that check what was logged. */
export function recordingLogger(): {
  logger: Logger;
  entries: () => Array<Record<string, unknown>>;
} {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((line) => line !== ''),
      );
      done();
    },
  });
  return {
    logger: pino({ level: 'debug' }, sink),
    entries: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

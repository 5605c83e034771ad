import type { Logger } from '../logger';
import { testLogger } from './logger';

/**
 * The options both runners take, for a command of `node -e <script>` (a real child process per
 * task) with PATH as its only inherited variable.
 */
export function nodeScriptOptions(
  script: string,
  killGraceMs = 5000,
  logger: Logger = testLogger(),
): { argv: string[]; env: Record<string, string>; killGraceMs: number; logger: Logger } {
  return {
    argv: [process.execPath, '-e', script],
    env: { PATH: process.env.PATH ?? '' },
    killGraceMs,
    logger,
  };
}

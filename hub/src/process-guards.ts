import type { Logger } from './logger';

/**
 * Keeps a replica running through a promise rejection nobody handled, and logs it with its stack.
 *
 * Node ends the process on one (exit code 1). A replica's state is in Redis and every task it
 * holds is covered by a lease, so a stray rejection, such as a library's fire-and-forget
 * `publish` on a connection that is closing during a graceful stop, is not worth dropping every
 * agent connected here; it is worth an error line naming it. Thrown exceptions still end the
 * process: the code after the throw did not run.
 */
export function logUnhandledRejections(logger: Pick<Logger, 'error'>): void {
  process.on('unhandledRejection', (reason: unknown) => {
    logger.error(
      { err: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) },
      'unhandled promise rejection (the replica keeps running)',
    );
  });
}

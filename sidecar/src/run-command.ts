import { isConfigError } from './config-error';
import { loadNamedRunConfig, type NamedRunConfig, type RunFlags } from './config';
import type { Env } from './config-layers';
import { startDaemon, type Daemon } from './daemon';
import { EXIT_CODES, type ExitCode } from './exit-codes';
import { createLogger, type Logger } from './logger';
import { StateFileError } from './outbox/state-file-error';
import { StateDirInUseError } from './outbox/state-lock';
import { errorText } from './error-text';

/**
 * `agentcom-sidecar run`: config → daemon → wait for a signal or for the daemon to end.
 * Returns the exit code (see exit-codes.ts); the caller exits with it.
 *
 * First SIGTERM/SIGINT: graceful shutdown (drain, deliver), exit 0. A second one: the task's
 * process group gets SIGKILL and the exit is immediate, code 130.
 */
export async function runCommand(
  flags: RunFlags,
  stderr: NodeJS.WritableStream,
  /** The environment (config.ts reads `process.env` when none is given). */
  env?: Env,
): Promise<ExitCode> {
  let loaded: NamedRunConfig;
  try {
    loaded = loadNamedRunConfig(flags, env);
  } catch (err) {
    if (!isConfigError(err)) throw err;
    stderr.write(`agentcom-sidecar: ${err.message}\n`);
    return EXIT_CODES.BAD_CONFIG;
  }
  const { config, optionName } = loaded;
  let logger: Logger;
  try {
    logger = createLogger(config.logLevel, config.agentId, config.logFile);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? errorText(err);
    stderr.write(
      `agentcom-sidecar: ${optionName('logFile')}: cannot open ${config.logFile ?? ''} (${code})\n`,
    );
    return EXIT_CODES.BAD_CONFIG;
  }

  let daemon: Daemon;
  try {
    daemon = await startDaemon(config, { logger });
  } catch (err) {
    if (err instanceof StateDirInUseError || err instanceof StateFileError) {
      stderr.write(`agentcom-sidecar: ${optionName('stateDir')}: ${err.message}\n`);
      return EXIT_CODES.BAD_CONFIG;
    }
    logger.fatal({ err: errorText(err) }, 'the sidecar could not start');
    return EXIT_CODES.UNEXPECTED;
  }

  // pm2 `wait_ready`: ready once the hub took the handshake.
  daemon.events.once('connected', () => process.send?.('ready'));
  return waitForEnd(daemon, logger);
}

function waitForEnd(daemon: Daemon, logger: Logger): Promise<ExitCode> {
  return new Promise<ExitCode>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        logger.warn({ signal }, 'second signal: killing the task and exiting now');
        daemon.killNow();
        resolve(EXIT_CODES.SECOND_SIGNAL);
        return;
      }
      logger.info({ signal }, 'signal received: draining');
      daemon.shutdown().then(
        () => resolve(EXIT_CODES.OK),
        (err: unknown) => {
          logger.error({ err: errorText(err) }, 'shutdown failed');
          resolve(EXIT_CODES.UNEXPECTED);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('uncaughtException', (err) => {
      logger.fatal({ err: errorText(err), stack: err.stack }, 'unexpected error');
      daemon.killNow();
      resolve(EXIT_CODES.UNEXPECTED);
    });
    void daemon.ended.then(({ exitCode }) => resolve(exitCode));
  });
}

import { EventEmitter } from 'node:events';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PROTOCOL_VERSION, type HandshakeAuth } from '@agentcom/shared';
import { IPC_SOCKET_NAME, type SidecarConfig } from './config';
import { HubConnection } from './connection/hub-connection';
import type { DaemonEvents } from './daemon-events';
import { EXIT_CODES, type ExitCode } from './exit-codes';
import { createLogger, type Logger } from './logger';
import { mkdirDurable } from './outbox/atomic-write';
import { Outbox } from './outbox/outbox';
import { asStateFileError, StateFileError } from './outbox/state-file-error';
import { acquireStateLock, type StateLock } from './outbox/state-lock';
import type { HeldTask, Report } from './outbox/state-schema';
import { createIpcHandler } from './ipc/ipc-handler';
import { startIpcServer, type IpcServer } from './ipc/ipc-server';
import type { SidecarStatus } from './ipc/ipc-protocol';
import { statusReporter } from './ipc/sidecar-status';
import { ExecRunner } from './runner/exec-runner';
import { reapOrphan, type ReapOutcome } from './runner/orphan-reaper';
import type { TaskRunner } from './runner/task-runner';
import { WakeRunner } from './runner/wake-runner';
import { askHubToDrain } from './task/ask-drain';
import { drain } from './task/drain';
import { ReportDelivery } from './task/report-delivery';
import { TaskController } from './task/task-controller';
import { SIDECAR_VERSION } from './version';
import { errorText } from './error-text';

export type { DaemonEvents } from './daemon-events';

export interface DaemonOptions {
  /** Defaults to a JSON logger on stderr at `config.logLevel`. */
  logger?: Logger;
  /** Connection tuning for tests; see {@link HubConnection}. */
  reconnectionDelay?: number;
  reconnectionDelayMax?: number;
  refusedRetryMs?: number;
}

export interface Daemon {
  readonly events: EventEmitter<DaemonEvents>;
  /** Settles when the daemon ended by itself (handshake refused, replaced): the exit code to use. */
  readonly ended: Promise<{ exitCode: ExitCode; reason: string }>;
  /**
   * Graceful stop (SIGTERM): send `agent:drain`, take no new task, wait for the running one up to
   * `drainGraceMs` (then stop it), deliver the outbox as far as the connection allows, disconnect.
   */
  shutdown(): Promise<void>;
  /**
   * Stop now: the connection closes, nothing more is sent, the running task is stopped (SIGTERM,
   * SIGKILL after `killGraceMs`) and its failure report kept in the outbox for the next start.
   */
  stop(): Promise<void>;
  /** SIGKILL to the running task's process group, synchronously (a second signal: exit now). */
  killNow(): void;
  /** A snapshot of the durable state. */
  state(): { connected: boolean; current: HeldTask | undefined; outbox: readonly Report[] };
  /** What `agentcom-sidecar status` shows. */
  status(): SidecarStatus;
  /** The local IPC socket (`<state-dir>/sidecar.sock`). */
  readonly socketPath: string;
}

/**
 * Composition root: takes the state dir, loads the outbox, wires connection, runner, controller,
 * delivery and the local IPC socket, and starts connecting. Resolves once it is connecting (not
 * connected).
 */
export async function startDaemon(
  config: SidecarConfig,
  options: DaemonOptions = {},
): Promise<Daemon> {
  const logger = options.logger ?? createLogger(config.logLevel, config.agentId);
  // a state dir or state.json the user cannot use as it is: one line naming it (StateFileError)
  const unusableDir = (err: unknown) => asStateFileError(err, config.stateDir, 'the state dir');
  let dirMode: number;
  try {
    await mkdirDurable(config.stateDir, 0o700);
    dirMode = (await stat(config.stateDir)).mode & 0o777;
  } catch (err) {
    throw unusableDir(err);
  }
  // Whoever may write the dir may replace its IPC socket (and take the agent's `done`), state.json
  // or current.json: refused, as a token file open to others is.
  if ((dirMode & 0o022) !== 0) {
    throw new StateFileError(
      config.stateDir,
      'EPERM',
      `${config.stateDir} is writable by group or others (mode ${dirMode.toString(8)}): another ` +
        `user could replace its IPC socket or state file; make it owner-only: chmod 700 ${config.stateDir}`,
    );
  }
  if ((dirMode & 0o077) !== 0) {
    logger.warn(
      { stateDir: config.stateDir, mode: dirMode.toString(8) },
      'the state dir is open to group or others: make it owner-only (chmod 700)',
    );
  }
  const lock = await acquireStateLock(config.stateDir).catch((err: unknown) => {
    throw unusableDir(err);
  });
  try {
    return await assemble(config, options, logger, lock);
  } catch (err) {
    await lock.release();
    throw err;
  }
}

async function assemble(
  config: SidecarConfig,
  options: DaemonOptions,
  logger: Logger,
  lock: StateLock,
): Promise<Daemon> {
  const events = new EventEmitter<DaemonEvents>();
  // The hub retries the interrupted task as soon as it is reported: its handler must not run on.
  const outbox = await Outbox.open(config.stateDir, logger, {
    beforeReportingInterrupted: (held) =>
      stopOrphanedHandler(held, config.runner.kind, config.killGraceMs, logger),
  });
  const wake =
    config.runner.kind === 'wake'
      ? new WakeRunner({
          argv: config.runner.argv,
          env: config.childEnv,
          stateDir: config.stateDir,
          killGraceMs: config.killGraceMs,
          logger,
        })
      : undefined;
  // The task of a current.json left by a dead sidecar is reported as interrupted by the outbox.
  await wake?.removeStaleTaskFile();
  const runner: TaskRunner =
    wake ??
    new ExecRunner({
      argv: config.runner.argv,
      env: config.childEnv,
      killGraceMs: config.killGraceMs,
      logger,
    });
  const connection = new HubConnection({
    urls: config.hubUrls,
    auth: (): HandshakeAuth => {
      const current = controller.currentAssignment();
      return {
        agentId: config.agentId,
        token: config.token,
        protocol: PROTOCOL_VERSION,
        queues: [...config.queues],
        // Only when there is one at least: the hub takes a missing `labels` as none.
        ...(Object.keys(config.labels).length > 0 && { labels: { ...config.labels } }),
        sidecarVersion: SIDECAR_VERSION,
        ...(current !== undefined && { current }),
      };
    },
    failoverAttempts: config.failoverAttempts,
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    ackTimeoutMs: config.ackTimeoutMs,
    logger,
    reconnectionDelay: options.reconnectionDelay,
    reconnectionDelayMax: options.reconnectionDelayMax,
    refusedRetryMs: options.refusedRetryMs,
  });
  const delivery = new ReportDelivery({
    outbox,
    connection,
    logger,
    retryMs: config.ackTimeoutMs,
    onSettled: ({ report, outcome, code }) =>
      events.emit('reported', { taskId: report.taskId, type: report.type, outcome, code }),
  });
  const controller = new TaskController({
    outbox,
    connection,
    runner,
    delivery,
    events,
    logger,
    ackTimeoutMs: config.ackTimeoutMs,
  });

  connection.on('connected', (url) => {
    events.emit('connected', { url });
    // A drain asked by this sidecar lasts as long as the connection that asked: still stopping,
    // it asks the new one too, or the hub would hand it tasks again.
    if (controller.isDraining) void askHubToDrain(connection, logger, 'reconnected while stopping');
    // Replay first: reports of earlier connections (or runs) go before anything new.
    void delivery.flush().finally(() => controller.heartbeat());
  });
  connection.on('disconnected', (reason) => events.emit('disconnected', { reason }));
  connection.on('task:assign', (payload) => controller.onAssign(payload));
  connection.on('task:cancel', (payload) => controller.onCancel(payload));

  const status = statusReporter({ config, connection, controller, outbox });
  const ipc: IpcServer = await startIpcServer(
    join(config.stateDir, IPC_SOCKET_NAME),
    createIpcHandler({
      status,
      wake,
      events,
      // Below the local command's own 60 s wait, so it always hears the answer.
      storeTimeoutMs: Math.min(config.ackTimeoutMs + 10_000, 50_000),
      logger,
    }),
    logger,
  );

  const heartbeat = setInterval(() => void controller.heartbeat(), config.heartbeatMs);

  let closing: Promise<void> | undefined;
  const close = (work: () => Promise<void>): Promise<void> => {
    closing ??= (async () => {
      try {
        await work();
      } finally {
        clearInterval(heartbeat);
        delivery.stop();
        connection.close();
        await ipc.close();
        await outbox.idle();
        await lock.release();
      }
    })();
    return closing;
  };

  let resolveEnded: (end: { exitCode: ExitCode; reason: string }) => void = () => undefined;
  const ended = new Promise<{ exitCode: ExitCode; reason: string }>((resolve) => {
    resolveEnded = resolve;
  });
  connection.on('ended', ({ kind, code, message }) => {
    const exitCode = kind === 'replaced' ? EXIT_CODES.REPLACED : EXIT_CODES.REFUSED;
    const reason = `${code}: ${message}`;
    void close(() => controller.stopNow()).then(() => {
      events.emit('ended', { exitCode, reason });
      resolveEnded({ exitCode, reason });
    });
  });

  const held = outbox.current;
  logger.info(
    {
      version: SIDECAR_VERSION,
      hubs: config.hubUrls,
      queues: config.queues,
      labels: config.labels,
      mode: config.runner.kind,
      configFile: config.configFile,
      stateDir: config.stateDir,
      held: held && { taskId: held.taskId, state: held.state },
      undelivered: outbox.reports.length,
    },
    'sidecar starting',
  );
  connection.start();

  return {
    events,
    ended,
    shutdown: () =>
      close(() =>
        drain({ connection, controller, delivery, outbox, logger, graceMs: config.drainGraceMs }),
      ),
    stop: () =>
      close(async () => {
        delivery.stop();
        connection.close();
        await controller.stopNow();
      }),
    killNow: () => controller.killNow(),
    state: () => ({
      connected: connection.connected,
      current: outbox.current,
      outbox: outbox.reports,
    }),
    status,
    socketPath: ipc.path,
  };
}

const REAPED: Record<ReapOutcome, string> = {
  'not-running': 'the handler of the interrupted task no longer runs',
  'pid-reused': 'the handler of the interrupted task is gone (its pid is another process now)',
  terminated: 'stopped the handler the previous sidecar process left running (SIGTERM)',
  killed: 'stopped the handler the previous sidecar process left running (SIGKILL after the grace)',
  survived:
    'could not stop the handler the previous sidecar process left running: it may still run the task',
  'skipped-unverifiable':
    'cannot verify that this pid is still the handler of the interrupted task, so it was not ' +
    'signalled: an orphaned handler may still run the task (check by hand)',
};

/** Stops the process group of a task a dead sidecar process left `working` (exec mode). */
async function stopOrphanedHandler(
  held: HeldTask,
  runner: SidecarConfig['runner']['kind'],
  graceMs: number,
  logger: Logger,
): Promise<void> {
  const recorded = held.process;
  if (recorded === undefined) {
    // Wake mode records no process. In exec mode the sidecar died between starting the handler
    // and recording it (or an older version wrote the file): nothing can be signalled, and the
    // handler may still run while the hub retries the task, so the operator must hear of it.
    if (runner === 'exec') {
      logger.warn(
        { taskId: held.taskId },
        'no handler process is recorded for the interrupted task, so none was signalled: an ' +
          'orphaned handler may still run the task (check by hand)',
      );
    }
    return;
  }
  const fields = { taskId: held.taskId, pid: recorded.pid };
  try {
    const outcome = await reapOrphan(recorded, { graceMs });
    logger.warn({ ...fields, outcome }, REAPED[outcome]);
  } catch (err) {
    logger.error({ ...fields, err: errorText(err) }, 'could not check for an orphaned handler');
  }
}

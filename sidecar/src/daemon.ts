import { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { PROTOCOL_VERSION, type HandshakeAuth } from '@agentcom/shared';
import type { SidecarConfig } from './config';
import { HubConnection } from './connection/hub-connection';
import type { DaemonEvents } from './daemon-events';
import { EXIT_CODES, type ExitCode } from './exit-codes';
import { createLogger, type Logger } from './logger';
import { Outbox } from './outbox/outbox';
import { acquireStateLock, type StateLock } from './outbox/state-lock';
import type { HeldTask, Report } from './outbox/state-schema';
import { ExecRunner } from './runner/exec-runner';
import { drain } from './task/drain';
import { ReportDelivery } from './task/report-delivery';
import { TaskController } from './task/task-controller';
import { SIDECAR_VERSION } from './version';

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
}

/**
 * Composition root: takes the state dir, loads the outbox, wires connection, runner, controller
 * and delivery, and starts connecting. Resolves once it is connecting (not connected).
 */
export async function startDaemon(
  config: SidecarConfig,
  options: DaemonOptions = {},
): Promise<Daemon> {
  const logger = options.logger ?? createLogger(config.logLevel, config.agentId);
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const lock = await acquireStateLock(config.stateDir);
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
  const outbox = await Outbox.open(config.stateDir, logger);
  const connection = new HubConnection({
    urls: config.hubUrls,
    auth: (): HandshakeAuth => {
      const current = controller.currentAssignment();
      return {
        agentId: config.agentId,
        token: config.token,
        protocol: PROTOCOL_VERSION,
        queues: [...config.queues],
        sidecarVersion: SIDECAR_VERSION,
        ...(current !== undefined && { current }),
      };
    },
    failoverAttempts: config.failoverAttempts,
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
    runner: new ExecRunner({
      argv: config.runner.argv,
      env: config.childEnv,
      killGraceMs: config.killGraceMs,
      logger,
    }),
    delivery,
    events,
    logger,
    ackTimeoutMs: config.ackTimeoutMs,
  });

  connection.on('connected', (url) => {
    events.emit('connected', { url });
    // Replay first: reports of earlier connections (or runs) go before anything new.
    void delivery.flush().finally(() => controller.heartbeat());
  });
  connection.on('disconnected', (reason) => events.emit('disconnected', { reason }));
  connection.on('task:assign', (payload) => controller.onAssign(payload));
  connection.on('task:cancel', (payload) => controller.onCancel(payload));

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
  };
}

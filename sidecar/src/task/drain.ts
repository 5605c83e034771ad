import type { HubConnection } from '../connection/hub-connection';
import type { Logger } from '../logger';
import type { Outbox } from '../outbox/outbox';
import type { ReportDelivery } from './report-delivery';
import type { TaskController } from './task-controller';
import { askHubToDrain } from './ask-drain';

/**
 * The least time a drain whose task is over waits for a connection to deliver the reports left in
 * its outbox (the hub restarting, its replica stopping: `hub:draining` moves the connection); it
 * waits until the end of the drain grace when that is later. The deploy files leave a stopping
 * sidecar 5 s for its report after the drain and kill graces.
 */
export const DELIVERY_WAIT_MS = 5000;

export interface DrainParts {
  connection: Pick<HubConnection, 'connected' | 'request' | 'retryNow' | 'once' | 'off'>;
  controller: Pick<TaskController, 'drain'>;
  delivery: Pick<ReportDelivery, 'flush'>;
  outbox: Pick<Outbox, 'reports'>;
  logger: Logger;
  graceMs: number;
  /** See {@link DELIVERY_WAIT_MS} (the default). */
  deliveryWaitMs?: number;
}

/**
 * The graceful half of a shutdown: tell the hub (`agent:drain`) so it assigns nothing more, let
 * the running task finish within `graceMs` (then stop it), and deliver the outbox, waiting for a
 * connection if there is none, until the grace is over and at least `deliveryWaitMs`. What cannot
 * be delivered stays in the state file for the next start. A hub that refuses the drain does not
 * stop it: see {@link askHubToDrain}.
 */
export async function drain(parts: DrainParts): Promise<void> {
  const { connection, controller, outbox, logger, graceMs } = parts;
  logger.info({ graceMs }, 'draining: finishing the current task, taking no new one');
  const graceOver = performance.now() + graceMs;
  // Called first: it stops taking tasks at once, and the grace runs from now, not from the hub's
  // answer (a task pushed while agent:drain awaits its ack is not taken).
  const finished = controller.drain(graceMs);
  if (connection.connected) await askHubToDrain(connection, logger, 'stopping');
  await finished;
  await deliver(
    parts,
    Math.max(graceOver, performance.now() + (parts.deliveryWaitMs ?? DELIVERY_WAIT_MS)),
  );
  const undelivered = outbox.reports.length;
  if (undelivered > 0) {
    logger.warn(
      { undelivered },
      'stopping with undelivered reports: they are sent on the next start',
    );
  }
  logger.info('drained; stopping');
}

/**
 * Delivers the outbox. Without a connection it does not give up at once: the result of a task
 * left here waits for a next start that may never come (a sidecar stopped for good), while the
 * hub runs the task again once its lease is over. It asks the connection to try now and waits
 * for it, until `deadline` (`performance.now()`).
 */
async function deliver(parts: DrainParts, deadline: number): Promise<void> {
  const { connection, delivery, outbox, logger } = parts;
  await delivery.flush();
  while (outbox.reports.length > 0 && !connection.connected) {
    const leftMs = Math.round(deadline - performance.now());
    if (leftMs <= 0 || !connection.retryNow()) return;
    logger.info(
      { undelivered: outbox.reports.length, waitMs: leftMs },
      'not connected to a hub: waiting for a connection to deliver the outbox',
    );
    if (!(await connectedWithin(connection, leftMs))) return;
    await delivery.flush();
  }
}

/** True once connected, false when `timeoutMs` passed first. */
async function connectedWithin(
  connection: Pick<HubConnection, 'connected' | 'once' | 'off'>,
  timeoutMs: number,
): Promise<boolean> {
  if (connection.connected) return true;
  let timer: NodeJS.Timeout | undefined;
  let onConnected: (() => void) | undefined;
  const connected = await new Promise<boolean>((resolve) => {
    onConnected = () => resolve(true);
    connection.once('connected', onConnected);
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  clearTimeout(timer);
  if (onConnected) connection.off('connected', onConnected);
  return connected;
}

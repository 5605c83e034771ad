import type { HubConnection } from '../connection/hub-connection';
import type { Logger } from '../logger';
import type { Outbox } from '../outbox/outbox';
import type { ReportDelivery } from './report-delivery';
import type { TaskController } from './task-controller';
import { errorText } from '../error-text';

export interface DrainParts {
  connection: Pick<HubConnection, 'connected' | 'request'>;
  controller: Pick<TaskController, 'drain'>;
  delivery: Pick<ReportDelivery, 'flush'>;
  outbox: Pick<Outbox, 'reports'>;
  logger: Logger;
  graceMs: number;
}

/**
 * The graceful half of a shutdown: tell the hub (`agent:drain`) so it assigns nothing more, let
 * the running task finish within `graceMs` (then stop it), and deliver the outbox as far as the
 * connection allows. What cannot be delivered stays in the state file for the next start.
 */
export async function drain(parts: DrainParts): Promise<void> {
  const { connection, controller, delivery, outbox, logger, graceMs } = parts;
  logger.info({ graceMs }, 'draining: finishing the current task, taking no new one');
  // Called first: it stops taking tasks at once, and the grace runs from now, not from the hub's
  // answer (a task pushed while agent:drain awaits its ack is not taken).
  const finished = controller.drain(graceMs);
  if (connection.connected) {
    await connection.request('agent:drain', {}).catch((err: unknown) => {
      logger.warn({ err: errorText(err) }, 'agent:drain not acknowledged');
    });
  }
  await finished;
  await delivery.flush();
  const undelivered = outbox.reports.length;
  if (undelivered > 0) {
    logger.warn(
      { undelivered },
      'stopping with undelivered reports: they are sent on the next start',
    );
  }
  logger.info('drained; stopping');
}

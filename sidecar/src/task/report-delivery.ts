import { ERROR_CODES, isErrorCode, type ReportAck } from '@agentcom/shared';
import type { HubConnection } from '../connection/hub-connection';
import type { Logger } from '../logger';
import type { Outbox } from '../outbox/outbox';
import type { Report } from '../outbox/state-schema';
import { errorText } from '../error-text';

/** How the hub settled a report. */
export interface ReportSettlement {
  report: Report;
  /** `acked`: applied (or a duplicate of an applied one); `rejected`: refused for good (e.g. superseded). */
  outcome: 'acked' | 'rejected';
  code?: string;
  duplicate?: boolean;
}

export interface ReportDeliveryOptions {
  outbox: Outbox;
  connection: Pick<HubConnection, 'connected' | 'request'>;
  logger: Logger;
  /** Pause before sending again after a retryable refusal or a missing ack while connected. */
  retryMs: number;
  onSettled: (settlement: ReportSettlement) => void;
  /** This machine's clock (epoch ms), which a stored rate limit's end is on. Default `Date.now`. */
  now?: () => number;
}

/**
 * Sends the outbox to the hub, oldest report first, one at a time. A report leaves the outbox
 * only when the hub acks it `ok`, or refuses it with a code that is not retryable
 * (`E_ASSIGNMENT_SUPERSEDED`, `E_VALIDATION`, ...; see `ERROR_CODES`), but `E_UNAUTHORIZED`,
 * which refuses the connection's agent token (rotated or revoked since it connected), not the
 * report: that one waits for a connection made with the agent's token. Anything else (no ack,
 * a retryable code, a dropped connection) stops the run; the report is sent again on the next
 * connect, or after `retryMs` while still connected. Replays are safe: the hub acks a report it
 * already applied as a duplicate.
 */
export class ReportDelivery {
  private tail: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: ReportDeliveryOptions) {}

  /** Runs a delivery pass that starts after this call; passes never overlap. Never rejects. */
  flush(): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    const run = this.tail.then(async () => {
      this.queued = undefined;
      try {
        await this.deliver();
      } catch (err) {
        this.options.logger.error({ err: errorText(err) }, 'report delivery failed');
      }
    });
    this.queued = run;
    this.tail = run;
    return run;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
  }

  private async deliver(): Promise<void> {
    const { outbox, connection, logger } = this.options;
    clearTimeout(this.retryTimer);
    for (;;) {
      const report = outbox.reports[0];
      if (report === undefined || this.stopped || !connection.connected) return;
      const log = logger.child({ taskId: report.taskId, report: report.type });
      let ack: ReportAck;
      try {
        ack = await send(connection, report, this.options.now ?? Date.now);
      } catch (err) {
        log.warn({ err: errorText(err) }, 'report not acknowledged; will resend');
        this.retryLater();
        return;
      }
      if (ack.ok) {
        await this.remove(report);
        log.info({ duplicate: ack.duplicate === true }, 'report delivered');
        this.options.onSettled({ report, outcome: 'acked', duplicate: ack.duplicate === true });
        continue;
      }
      if (ack.code === 'E_UNAUTHORIZED') {
        // this connection's token is no longer the agent's (rotated or revoked): the hub closes
        // it. The report is not refused: it waits for a connection made with the agent's token.
        log.warn(
          { code: ack.code, reason: ack.message },
          "the hub refused this connection's token; the report waits for the next connection",
        );
        return;
      }
      const retryable = isErrorCode(ack.code) ? ERROR_CODES[ack.code].retryable : true;
      if (retryable) {
        log.warn(
          { code: ack.code, reason: ack.message },
          'the hub cannot take the report now; will resend',
        );
        this.retryLater();
        return;
      }
      await this.remove(report);
      log.warn(
        { code: ack.code, reason: ack.message },
        'the hub refused the report for good; dropped it',
      );
      this.options.onSettled({ report, outcome: 'rejected', code: ack.code });
    }
  }

  /** Removes a settled report; a failed write leaves it removed in memory, and is logged. */
  private async remove(report: Report): Promise<void> {
    try {
      await this.options.outbox.removeReport(report);
    } catch (err) {
      this.options.logger.error(
        { taskId: report.taskId, err: errorText(err) },
        'could not record a delivered report in the state file; it may be sent again after a restart',
      );
    }
  }

  private retryLater(): void {
    if (this.stopped || !this.options.connection.connected) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.flush(), this.options.retryMs);
  }
}

function send(
  connection: Pick<HubConnection, 'request'>,
  report: Report,
  now: () => number,
): Promise<ReportAck> {
  const { taskId, token } = report;
  if (report.type === 'complete') {
    return connection.request('task:complete', { taskId, token, result: report.result });
  }
  const { error, retryable, kind, rateLimitedUntil } = report;
  return connection.request('task:fail', {
    taskId,
    token,
    error,
    retryable,
    kind,
    // what is left of the rate limit, sent as a duration: the hub rests the agent by its own
    // clock, which this machine's need not agree with (a report sent again after a reconnect
    // carries less, or 0 once the limit is over: the hub still requeues the task)
    ...(rateLimitedUntil !== undefined && {
      retryAfterMs: Math.max(0, Math.ceil(rateLimitedUntil - now())),
    }),
  });
}

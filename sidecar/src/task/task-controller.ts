import { setTimeout as sleep } from 'node:timers/promises';
import {
  backoffMs,
  ERROR_CODES,
  isErrorCode,
  taskAssignSchema,
  taskCancelSchema,
  type AgentHeartbeat,
  type CurrentAssignment,
  type TaskAssign,
} from '@agentcom/shared';
import type { HubConnection } from '../connection/hub-connection';
import type { DaemonEmitter } from '../daemon-events';
import type { Logger } from '../logger';
import { sameTask, type Outbox, type TaskRef } from '../outbox/outbox';
import type { Report } from '../outbox/state-schema';
import {
  stoppedOutcome,
  type RunOutcome,
  type RunningTask,
  type StopReason,
  type TaskRunner,
} from '../runner/task-runner';
import { LogBatcher } from './log-batcher';
import { LogPace } from './log-pace';
import type { ReportDelivery } from './report-delivery';
import { askHubToDrain } from './ask-drain';
import { errorText } from '../error-text';

/**
 * How many times a `task:accept` left unanswered, or refused with a retryable code, is sent before
 * the task is given up.
 */
const ACCEPT_ATTEMPTS = 3;

/**
 * The pause before sending again an accept refused with a retryable code, as a share of
 * `ackTimeoutMs`; doubled at each further refusal, ±50%. The pauses of {@link ACCEPT_ATTEMPTS}
 * attempts add up to at most 0.45 `ackTimeoutMs` (0.5–1.5 s, then 1–3 s at the default 10 s).
 */
const ACCEPT_RETRY_SHARE = 0.1;

export interface TaskControllerOptions {
  outbox: Outbox;
  connection: Pick<HubConnection, 'connected' | 'request'>;
  runner: TaskRunner;
  delivery: Pick<ReportDelivery, 'flush'>;
  events: DaemonEmitter;
  logger: Logger;
  /** Bounds the wait for the last log lines of a task before its report. */
  ackTimeoutMs: number;
}

/** The agent's state as the last heartbeat ack gave it. */
export interface HeartbeatSeen {
  state: string;
  /** Epoch ms of the ack. */
  at: number;
  /** The replica that answered, when the hub says. */
  hubId: string | undefined;
}

/** The one task being carried out: from its assignment until its report is in the outbox. */
interface Session {
  readonly assignment: TaskAssign;
  /** Epoch ms of the assignment. */
  readonly since: number;
  readonly ref: TaskRef;
  readonly logger: Logger;
  running: RunningTask | undefined;
  /** A stop that arrived before the task started. */
  stopReason: StopReason | undefined;
  /** Aborted when the task is stopped: ends a pause between two accepts at once. */
  readonly stopping: AbortController;
  /**
   * Set once the task is being stopped or its outcome is known: the hub may already have pushed
   * the agent's next task, which is then taken as soon as this one is over ({@link deferred}).
   */
  ending: boolean;
  /** The whole flow: until the report is stored, the last log lines sent and delivery started. */
  done: Promise<void>;
}

/** An assignment that arrived while the session before it was ending. */
interface DeferredAssignment {
  readonly payload: unknown;
  /** Epoch ms it arrived: the hub's ack timeout runs from then. */
  readonly receivedAt: number;
}

/**
 * The task flow, one task at a time:
 * assignment (validated) → recorded `working` in the state file → `task:accept` → run → report
 * in the outbox (`finished`) → delivery. A refused accept, a lost lease (heartbeat `abort`) or a
 * `task:cancel` for `lease_lost`/`superseded` drop the task without a report; `cancelled` and
 * `timeout` end it with a failure report.
 */
export class TaskController {
  /** The task being carried out, until its report is stored or it is dropped. */
  private session: Session | undefined;
  /** Taken when the session ends (see {@link Session.ending}); the latest one wins. */
  private deferred: DeferredAssignment | undefined;
  /** The last session's whole flow (its log lines may still be on their way after it ended). */
  private lastFlow: Promise<void> = Promise.resolve();
  private draining = false;
  private heartbeatInFlight = false;
  private lastHeartbeat: HeartbeatSeen | undefined;
  /** The pace of every task's log batches: the hub's flood budget is one per connection. */
  private readonly logPace = new LogPace();

  constructor(private readonly options: TaskControllerOptions) {}

  /** The task being carried out (from its assignment until its report is stored), if any. */
  currentTask(): { taskId: string; attempt: number; since: number } | undefined {
    const session = this.session;
    return session === undefined
      ? undefined
      : { taskId: session.ref.taskId, attempt: session.assignment.attempt, since: session.since };
  }

  /** What the last acknowledged heartbeat said. */
  lastHeartbeatAck(): HeartbeatSeen | undefined {
    return this.lastHeartbeat;
  }

  /** Whether it stopped taking tasks (draining or stopping). */
  get isDraining(): boolean {
    return this.draining;
  }

  /** What the handshake announces: the held task, running (`working`) or awaiting its ack (`finished`). */
  currentAssignment(): CurrentAssignment | undefined {
    const held = this.options.outbox.current;
    return held === undefined
      ? undefined
      : { taskId: held.taskId, token: held.token, state: held.state };
  }

  /** A `task:assign` from the hub; `receivedAt` is when it arrived (epoch ms). */
  onAssign(payload: unknown, receivedAt = Date.now()): void {
    const { logger, outbox, delivery } = this.options;
    const parsed = taskAssignSchema.safeParse(payload);
    if (!parsed.success) {
      logger.warn({ issue: parsed.error.issues[0]?.message }, 'ignoring an invalid task:assign');
      return;
    }
    const assignment = parsed.data;
    const ref = { taskId: assignment.task.id, token: assignment.token };
    const log = logger.child({ taskId: ref.taskId, attempt: assignment.attempt });
    const running = this.session;
    if (running !== undefined) {
      if (sameTask(running.ref, ref)) {
        log.info(
          'assigned the task already running (a resume): confirming it, not starting it again',
        );
        void this.options.connection.request('task:accept', ref).then(
          (ack) => log.info({ ok: ack.ok }, 'running task confirmed'),
          (err: unknown) =>
            log.warn({ err: errorText(err) }, 'task:accept of the running task not acknowledged'),
        );
      } else if (this.draining) {
        this.decline(log);
      } else if (running.ending) {
        // The hub took the running task back (or it is reporting it) and freed the agent at once:
        // its next task waits here until the old process group is gone.
        log.info(
          { endingTaskId: running.ref.taskId },
          'the previous task is ending: taking this assignment once it has',
        );
        this.deferred = { payload, receivedAt };
      } else {
        log.warn(
          { runningTaskId: running.ref.taskId },
          'ignoring an assignment: a task is already running',
        );
      }
      return;
    }
    const held = outbox.current;
    if (held !== undefined && sameTask(held, ref)) {
      log.info('assigned a task already finished here: delivering its report instead');
      void delivery.flush();
      return;
    }
    if (this.draining) {
      this.decline(log);
      return;
    }
    const session: Session = {
      assignment,
      ref,
      since: receivedAt,
      logger: log,
      running: undefined,
      stopReason: undefined,
      stopping: new AbortController(),
      ending: false,
      done: Promise.resolve(),
    };
    this.session = session;
    session.done = this.carryOut(session)
      .catch((err: unknown) => log.error({ err: errorText(err) }, 'task flow failed'))
      .finally(() => this.endSession(session));
    this.lastFlow = session.done;
  }

  /**
   * An assignment a draining sidecar will not take. It asks the hub to drain again, which gives
   * the task back at once: the hub pushed it because the first `agent:drain` crossed it, or was
   * refused or lost; ignored, the task waited out the hub's ack timeout.
   */
  private decline(log: Logger): void {
    log.info('draining: not taking the assignment; asking the hub to drain again');
    const { connection } = this.options;
    if (connection.connected) void askHubToDrain(connection, log, 'declining an assignment');
  }

  /**
   * The session no longer holds the agent: its report is stored or it was dropped (its last log
   * lines may still be on their way). An assignment that arrived while it was ending is taken
   * now, unless the hub's ack timeout for it has passed meanwhile.
   */
  private endSession(session: Session): void {
    if (this.session !== session) return;
    this.session = undefined;
    const next = this.deferred;
    this.deferred = undefined;
    if (next === undefined) return;
    if (Date.now() - next.receivedAt >= this.options.ackTimeoutMs) {
      this.options.logger.info('an assignment waited past the ack timeout: not taking it');
      return;
    }
    this.onAssign(next.payload, next.receivedAt);
  }

  onCancel(payload: unknown): void {
    const parsed = taskCancelSchema.safeParse(payload);
    if (!parsed.success) {
      this.options.logger.warn(
        { issue: parsed.error.issues[0]?.message },
        'ignoring an invalid task:cancel',
      );
      return;
    }
    const { taskId, reason, token } = parsed.data;
    const session = this.session;
    if (session === undefined || session.ref.taskId !== taskId) {
      this.options.logger.info(
        { taskId, reason },
        'task:cancel for a task not running here: ignored',
      );
      return;
    }
    if (token !== undefined && token !== session.ref.token) {
      // sent for an earlier assignment of the task, which the hub then gave to this agent again
      session.logger.info({ reason }, 'task:cancel for an earlier assignment of the task: ignored');
      return;
    }
    session.logger.info({ reason }, 'the hub cancelled the task');
    this.stopSession(session, reason);
  }

  /** One heartbeat; the ack's `abort` means the hub lost this assignment: the task is dropped. */
  async heartbeat(): Promise<void> {
    const { connection, logger } = this.options;
    if (this.heartbeatInFlight || !connection.connected) return;
    this.heartbeatInFlight = true;
    try {
      const held = this.options.outbox.current;
      const message: AgentHeartbeat =
        held === undefined ? {} : { taskId: held.taskId, token: held.token };
      const ack = await connection.request('agent:heartbeat', message);
      if (!ack.ok) {
        logger.debug({ code: ack.code, reason: ack.message }, 'heartbeat refused');
        return;
      }
      this.lastHeartbeat = {
        state: ack.state,
        at: Date.now(),
        hubId: ack.hubId,
      };
      const session = this.session;
      if (
        ack.abort === true &&
        session !== undefined &&
        held !== undefined &&
        sameTask(session.ref, held)
      ) {
        session.logger.warn('the hub lost this assignment (heartbeat abort): dropping the task');
        this.stopSession(session, 'lease_lost');
      }
    } catch (err) {
      logger.debug({ err: errorText(err) }, 'heartbeat not acknowledged');
    } finally {
      this.heartbeatInFlight = false;
    }
  }

  /**
   * Stops taking tasks (at once, before its first await) and waits for the running one up to
   * `graceMs`; past it the task is stopped (`shutdown`: a retryable failure). Settles when its
   * report is in the outbox and its last log lines were sent.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const session = this.session;
    if (session === undefined) return this.lastFlow;
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace over'>((resolve) => {
      timer = setTimeout(() => resolve('grace over'), graceMs);
    });
    const first = await Promise.race([session.done.then(() => 'done' as const), graceOver]);
    clearTimeout(timer);
    if (first === 'grace over') {
      session.logger.warn({ graceMs }, 'drain grace over: stopping the task');
      this.stopSession(session, 'shutdown');
      await session.done;
    }
  }

  /** Stops taking tasks; the running one is stopped now (SIGTERM, then SIGKILL after the grace). */
  async stopNow(): Promise<void> {
    this.draining = true;
    const session = this.session;
    if (session === undefined) return this.lastFlow;
    this.stopSession(session, 'shutdown');
    await session.done;
  }

  /** SIGKILL to the running task, synchronously: the process is about to exit. */
  killNow(): void {
    this.draining = true;
    this.session?.running?.killNow();
  }

  private async carryOut(session: Session): Promise<void> {
    const { outbox, events, delivery } = this.options;
    const { assignment, ref, logger } = session;
    await this.durably('record the task', () =>
      outbox.holdTask({ ...ref, attempt: assignment.attempt }),
    );
    logger.info({ queue: assignment.task.queue }, 'task assigned');
    events.emit('assigned', { ...ref, attempt: assignment.attempt });

    if (!(await this.accept(session))) {
      session.ending = true;
      await this.durably('forget the task', () => outbox.dropTask(ref));
      events.emit('dropped', { taskId: ref.taskId, reason: 'not_accepted' });
      return;
    }
    events.emit('accepted', { taskId: ref.taskId });

    const { connection, ackTimeoutMs } = this.options;
    // A refused batch rejects, as an unanswered one does: the batcher pauses before its next one,
    // so a chatty task does not keep a hub that refuses it busy refusing.
    const logs = new LogBatcher(
      async (lines) => {
        const ack = await connection.request('task:log', { ...ref, lines });
        if (!ack.ok) throw new Error(`the hub refused task:log: ${ack.code} (${ack.message})`);
      },
      { pace: this.logPace },
    );
    const outcome = await this.run(session, logs);
    session.ending = true;
    if (outcome.type === 'dropped') {
      logger.info({ reason: outcome.reason }, 'task dropped without a report');
      await this.durably('forget the task', () => outbox.dropTask(ref));
      events.emit('dropped', { taskId: ref.taskId, reason: outcome.reason });
      this.endSession(session);
      await logs.close(ackTimeoutMs);
      return;
    }
    const report: Report =
      outcome.type === 'complete'
        ? { type: 'complete', ...ref, result: outcome.result }
        : {
            type: 'fail',
            ...ref,
            error: outcome.error,
            retryable: outcome.retryable,
            kind: outcome.kind,
            ...(outcome.rateLimitedUntil !== undefined && {
              rateLimitedUntil: outcome.rateLimitedUntil,
            }),
          };
    // Stored before the last log lines are sent (up to ackTimeoutMs to a hub that is slow to
    // answer them): a crash meanwhile must not lose the result and have the task run again.
    await this.durably('store the report', () => outbox.finishTask(report));
    logger.info({ report: report.type }, 'task finished; report stored');
    events.emit('finished', { taskId: ref.taskId, report });
    // The agent may take its next task now: a reconnect meanwhile replays the report, and the hub
    // then pushes the next task at once.
    this.endSession(session);
    // The last lines go before the report, so the task's log reads in order (unless a reconnect
    // meanwhile replays the outbox first: logs are best-effort, the report is not).
    await logs.close(ackTimeoutMs);
    void delivery.flush();
  }

  /**
   * Sends `task:accept`; true only on an `ok` ack. An accept left unanswered (the connection
   * dropped, or the hub was slow) is sent again, on the new connection once there is one, up to
   * {@link ACCEPT_ATTEMPTS} times: a reconnect announces the task, the hub may resume it, and a
   * replayed accept of a resumed task is answered `ok`. Giving up would leave the hub counting on
   * a task nobody runs until its heartbeat check notices.
   *
   * A refusal with a retryable code (`E_RATE_LIMITED`, `E_UNAVAILABLE` while the hub's Redis is
   * down, `E_INTERNAL`; see `ERROR_CODES`) is sent again too, after a pause, within the same
   * attempts and only while the hub still waits for it: past `ackTimeoutMs` (the sidecar's
   * stand-in for the hub's `ACK_TIMEOUT_MS`, both 10 s by default) the hub has put the task back
   * and would refuse it as superseded. Any other refusal (`E_ASSIGNMENT_SUPERSEDED`, ...) drops
   * the task at once, and so does a stop.
   */
  private async accept(session: Session): Promise<boolean> {
    const { connection, ackTimeoutMs } = this.options;
    for (let attempt = 1; ; attempt++) {
      try {
        const ack = await connection.request('task:accept', session.ref);
        if (ack.ok) return true;
        const pauseMs = this.acceptRetryPause(session, ack.code, attempt);
        if (pauseMs === undefined) {
          session.logger.warn(
            { code: ack.code, reason: ack.message, attempts: attempt },
            'the hub refused task:accept; dropping the task',
          );
          return false;
        }
        session.logger.info(
          { code: ack.code, reason: ack.message, attempt, pauseMs },
          'the hub cannot take task:accept now; sending it again after a pause',
        );
        // Rejects when the task is stopped meanwhile: the stop is seen below.
        await sleep(pauseMs, undefined, { signal: session.stopping.signal }).catch(() => undefined);
        if (stoppedWhileWaiting(session)) return false;
      } catch (err) {
        if (attempt >= ACCEPT_ATTEMPTS || session.stopReason !== undefined) {
          session.logger.warn(
            { err: errorText(err), attempts: attempt },
            'task:accept not acknowledged; dropping the task',
          );
          return false;
        }
        session.logger.info(
          { err: errorText(err), attempt },
          'task:accept not acknowledged; sending it again',
        );
        await this.untilConnected(ackTimeoutMs, session.stopping.signal);
        if (stoppedWhileWaiting(session)) return false;
      }
    }
  }

  /**
   * The pause before sending again an accept refused with `code` on its `attempt`th try, or
   * undefined when it must not be sent again: the code is not retryable (an unknown one, from a
   * newer hub, is taken as retryable, as report delivery does), no attempt is left, the task is
   * being stopped, or the pause would end after the hub stopped waiting for the accept.
   */
  private acceptRetryPause(session: Session, code: string, attempt: number): number | undefined {
    const retryable = isErrorCode(code) ? ERROR_CODES[code].retryable : true;
    if (!retryable || attempt >= ACCEPT_ATTEMPTS || session.stopReason !== undefined)
      return undefined;
    const { ackTimeoutMs } = this.options;
    const pauseMs = backoffMs(attempt, { baseMs: ackTimeoutMs * ACCEPT_RETRY_SHARE });
    return Date.now() + pauseMs < session.since + ackTimeoutMs ? pauseMs : undefined;
  }

  /**
   * Resolves once connected (the daemon's `connected` event), after `timeoutMs`, or as soon as
   * `stopped` aborts (a stop must not wait out the ack timeout for a connection).
   */
  private async untilConnected(timeoutMs: number, stopped: AbortSignal): Promise<void> {
    if (this.options.connection.connected || stopped.aborted) return;
    const { events } = this.options;
    let timer: NodeJS.Timeout | undefined;
    let settle: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      settle = resolve;
      events.once('connected', settle);
      stopped.addEventListener('abort', settle, { once: true });
      timer = setTimeout(resolve, timeoutMs);
    });
    clearTimeout(timer);
    if (settle) {
      events.off('connected', settle);
      stopped.removeEventListener('abort', settle);
    }
  }

  /** Runs the task, its output lines into `logs`; settles once it ended. */
  private async run(session: Session, logs: LogBatcher): Promise<RunOutcome> {
    const { assignment, ref } = session;
    if (session.stopReason !== undefined)
      return stoppedOutcome(session.stopReason, assignment.timeoutMs);
    const { runner, outbox } = this.options;
    const running = runner.start(assignment, {
      log: (line) => logs.push(line),
      started: (process) =>
        this.durably('record the task process', () => outbox.recordProcess(ref, process)),
    });
    session.running = running;
    return running.outcome;
  }

  private stopSession(session: Session, reason: StopReason): void {
    if (session.running !== undefined) session.running.stop(reason);
    else session.stopReason ??= reason;
    session.ending = true;
    session.stopping.abort();
  }

  /**
   * Runs a state-file write; a failure (disk full, permissions) is logged and the flow goes on
   * from memory: the task is still carried out, only its survival across a restart is lost.
   */
  private async durably(what: string, write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (err) {
      this.options.logger.error({ err: errorText(err) }, `could not ${what} in the state file`);
    }
  }
}

/** Whether the task was stopped while its accept waited to be sent again (logged: it is dropped). */
function stoppedWhileWaiting(session: Session): boolean {
  if (session.stopReason === undefined) return false;
  session.logger.info('stopped while waiting to send task:accept again; dropping the task');
  return true;
}

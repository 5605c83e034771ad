import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskAssign } from '@agentcom/shared';
import { errorText } from '../error-text';
import type { Logger } from '../logger';
import { removeLeftoverTempFiles, writeFileAtomic } from '../outbox/atomic-write';
import { spawnGroupLeader } from './group-leader';
import type { ProcessGroup } from './process-group';
import { splitLines } from './line-splitter';
import { LineTail, MAX_OUTPUT_LINE_BYTES, truncate } from './task-output';
import {
  startDeadline,
  stoppedOutcome,
  type RunOutcome,
  type RunSink,
  type RunningTask,
  type StopReason,
  type TaskRunner,
} from './task-runner';

/** The task file of wake mode, in the state dir. */
export const TASK_FILE_NAME = 'current.json';

export interface WakeRunnerOptions {
  /** The configured wake command; never anything from the hub. */
  argv: readonly string[];
  /** The environment of the wake command (the task's own variables are added per task). */
  env: Readonly<Record<string, string>>;
  /** Where `current.json` is written. */
  stateDir: string;
  /** SIGTERM → SIGKILL delay when a wake command still running is stopped. */
  killGraceMs: number;
  logger: Logger;
}

/** What the agent reports through `agentcom-sidecar done` / `fail`. */
export type AgentReport =
  | { type: 'complete'; result: unknown }
  | { type: 'fail'; reason: string; retryable: boolean; rateLimitedUntil?: number };

/** Why a report was not taken. */
export type ReportRefusal =
  { code: 'E_NO_TASK'; message: string } | { code: 'E_OTHER_TASK'; message: string };

/** The task in hand, as `status` and the IPC commands see it. */
export interface TaskInHand {
  taskId: string;
  /** This run's id (`run` in `current.json`): tells two runs of the same task apart. */
  runId: string;
  attempt: number;
  /** Epoch ms the run started (`current.json` written). */
  startedAt: number;
}

/**
 * `wake` mode: for each task, write it to `<state-dir>/current.json` (atomically, owner-only),
 * run the wake command (no shell, its own process group) with `AGENTCOM_TASK_ID`,
 * `AGENTCOM_TASK_FILE`, `AGENTCOM_ATTEMPT`, `AGENTCOM_RUN_ID` (the `run` of `current.json`) and
 * `AGENTCOM_STATE_DIR` added to its environment, and
 * wait for the agent it woke to report through the local IPC ({@link WakeRunner.report}).
 *
 * - The wake command's stdout lines are task log lines; its stderr is logged locally.
 * - A wake command that fails (non-zero exit, a signal, or it cannot start) before the agent
 *   reported fails the task, retryable. Exit 0 means "the agent is awake": the task waits.
 * - The task ends with the agent's `done` / `fail`, its `timeoutMs` (kind `timeout`) or a
 *   `task:cancel` (kind `cancelled`; `lease_lost` / `superseded` drop it). A wake command still
 *   running when the task is stopped is terminated (its group: SIGTERM, SIGKILL after the
 *   grace); one still running when the agent reports is left to finish on its own, since it may
 *   be the agent itself waiting for `done` to return.
 * - `current.json` is removed before the outcome is known to the controller, so it exists
 *   exactly while a task is in hand.
 */
export class WakeRunner implements TaskRunner {
  private active: WakeRun | undefined;

  constructor(private readonly options: WakeRunnerOptions) {}

  get taskFile(): string {
    return join(this.options.stateDir, TASK_FILE_NAME);
  }

  /**
   * Removes a `current.json` left by a sidecar that died (its task is reported as interrupted),
   * and the temporary file of one it died writing.
   */
  async removeStaleTaskFile(): Promise<void> {
    await rm(this.taskFile, { force: true });
    await removeLeftoverTempFiles(this.taskFile);
  }

  start(assignment: TaskAssign, sink: RunSink): RunningTask {
    const run = new WakeRun(this.options, this.taskFile, assignment, sink);
    this.active = run;
    void run.outcome.then(() => {
      if (this.active === run) this.active = undefined;
    });
    return run;
  }

  /** The task waiting for the agent's report, if any. */
  inHand(): TaskInHand | undefined {
    const run = this.active;
    return run === undefined || run.settled ? undefined : run.describe();
  }

  /**
   * Ends the task in hand with the agent's report. With `taskId`, only that task: a late report
   * of an earlier task never ends the next one; with `runId`, only that run: a late report of an
   * earlier attempt never ends a retry of the same task that came back to this sidecar. Returns
   * the task id it ended, or why not.
   */
  report(
    report: AgentReport,
    taskId?: string,
    runId?: string,
  ): { ok: true; taskId: string } | ({ ok: false } & ReportRefusal) {
    const run = this.active;
    if (run === undefined || run.settled) {
      return { ok: false, code: 'E_NO_TASK', message: 'no task in hand' };
    }
    const { taskId: current, runId: currentRun } = run.describe();
    if (taskId !== undefined && taskId !== current) {
      return {
        ok: false,
        code: 'E_OTHER_TASK',
        message: `task ${taskId} is not in hand (the task in hand is ${current})`,
      };
    }
    if (runId !== undefined && runId !== currentRun) {
      return {
        ok: false,
        code: 'E_OTHER_TASK',
        message: `run ${runId} is not in hand: the task in hand (${current}) is another run of it, or another task`,
      };
    }
    run.report(report);
    return { ok: true, taskId: current };
  }
}

class WakeRun implements RunningTask {
  readonly outcome: Promise<RunOutcome>;
  private resolveOutcome: (outcome: RunOutcome) => void = () => undefined;
  /** Set as soon as the outcome is decided (the file removal may still be under way). */
  private decided = false;
  private stopReason: StopReason | undefined;
  private group: ProcessGroup | undefined;
  private wakeExited = false;
  private cancelDeadline: () => void = () => undefined;
  /** The write of `current.json`: its removal waits for it, so no file outlives the task. */
  private fileWritten: Promise<void> = Promise.resolve();
  private readonly startedAt = Date.now();
  /** Random, not derived from the assignment token (which the agent never sees). */
  private readonly runId = randomBytes(8).toString('hex');
  private readonly logger: Logger;

  constructor(
    private readonly options: WakeRunnerOptions,
    private readonly taskFile: string,
    private readonly assignment: TaskAssign,
    private readonly sink: RunSink,
  ) {
    this.logger = options.logger.child({ taskId: assignment.task.id, attempt: assignment.attempt });
    this.outcome = new Promise<RunOutcome>((resolve) => {
      this.resolveOutcome = resolve;
    });
    this.run().catch((err: unknown) =>
      this.settle({
        type: 'fail',
        error: truncate(`the sidecar failed to wake the agent: ${errorText(err)}`),
        retryable: true,
        kind: 'error',
      }),
    );
  }

  /**
   * Whether the task is no longer the agent's to report: its outcome is decided, or it is being
   * stopped (a stop decides the outcome even while the wake command gets its grace).
   */
  get settled(): boolean {
    return this.decided || this.stopReason !== undefined;
  }

  describe(): TaskInHand {
    return {
      taskId: this.assignment.task.id,
      runId: this.runId,
      attempt: this.assignment.attempt,
      startedAt: this.startedAt,
    };
  }

  report(report: AgentReport): void {
    if (this.settled) return;
    this.logger.info({ report: report.type }, 'the agent reported');
    if (!this.wakeExited && this.group !== undefined) {
      this.logger.info('the wake command is still running: it is left to finish on its own');
    }
    this.settle(
      report.type === 'complete'
        ? { type: 'complete', result: report.result }
        : {
            type: 'fail',
            error: truncate(report.reason),
            retryable: report.retryable,
            kind: 'error',
            ...(report.rateLimitedUntil !== undefined && {
              rateLimitedUntil: report.rateLimitedUntil,
            }),
          },
    );
  }

  stop(reason: StopReason): void {
    if (this.decided || this.stopReason !== undefined) return;
    this.stopReason = reason;
    this.logger.info({ reason }, 'stopping the task');
    const outcome = stoppedOutcome(reason, this.assignment.timeoutMs);
    if (this.group === undefined || this.wakeExited) {
      this.settle(outcome);
      return;
    }
    void this.group.terminate().then(() => this.settle(outcome));
  }

  killNow(): void {
    this.stopReason ??= 'shutdown';
    if (!this.wakeExited) this.group?.killNow();
    this.settle(stoppedOutcome(this.stopReason, this.assignment.timeoutMs));
  }

  /** Decides the outcome (the first decision wins), removes `current.json`, then resolves. */
  private settle(outcome: RunOutcome): void {
    if (this.decided) return;
    this.decided = true;
    this.cancelDeadline();
    void this.fileWritten
      .catch(() => undefined)
      .then(() => rm(this.taskFile, { force: true }))
      .catch((err: unknown) =>
        this.logger.error({ err: errorText(err) }, `could not remove ${this.taskFile}`),
      )
      .then(() => this.resolveOutcome(outcome));
  }

  private async run(): Promise<void> {
    const { task } = this.assignment;
    const taskFile = {
      id: task.id,
      queue: task.queue,
      payload: task.payload,
      ...(task.labels !== undefined && { labels: task.labels }),
      attempt: this.assignment.attempt,
      attempts: this.assignment.attempts,
      ...(this.assignment.timeoutMs !== undefined && { timeoutMs: this.assignment.timeoutMs }),
      createdAt: task.createdAt,
      run: this.runId,
    };
    this.fileWritten = writeFileAtomic(this.taskFile, `${JSON.stringify(taskFile)}\n`, 0o600);
    await this.fileWritten;
    // The agent may have reported (or the task been stopped: before the spawn, stop and killNow
    // settle at once) while the file was written: the task is over, and waking an agent for it
    // would start work nobody waits for.
    if (this.decided) return;
    this.cancelDeadline = startDeadline(this.assignment, this);

    const leader = spawnGroupLeader({
      argv: this.options.argv,
      what: 'wake command',
      stdin: 'ignore',
      env: {
        ...this.options.env,
        AGENTCOM_TASK_ID: task.id,
        AGENTCOM_TASK_FILE: this.taskFile,
        AGENTCOM_ATTEMPT: String(this.assignment.attempt),
        AGENTCOM_RUN_ID: this.runId,
        AGENTCOM_STATE_DIR: this.options.stateDir,
      },
      killGraceMs: this.options.killGraceMs,
    });
    const { command, child, exited } = leader;
    // From now on a stop settles the outcome only once the group is gone, as in exec mode.
    this.group = leader.group;
    const started = await leader.started;
    if ('failure' in started) {
      this.logger.error({ command, err: started.failure }, 'could not start the wake command');
      this.settle({
        type: 'fail',
        error: truncate(`could not start the wake command ${command}: ${started.failure}`),
        retryable: true,
        kind: 'error',
      });
      return;
    }
    const { group } = started;
    child.on('error', (err) => this.logger.warn({ err: errorText(err) }, 'wake command error'));
    this.logger.info({ pid: child.pid, taskFile: this.taskFile }, 'wake command started');
    // Decided while it was starting (stopped, or a report that cannot be from this command,
    // which was not running yet): it wakes an agent for a task that is over, so it is stopped.
    if (this.decided || this.stopReason !== undefined) void group.terminate();

    // Lines after the task ended (a process the wake command left running, still writing to
    // its pipe) are not the task's any more: logged locally only.
    splitLines(child.stdout, MAX_OUTPUT_LINE_BYTES, (line) => {
      if (this.decided) this.logger.debug({ stream: 'stdout', line }, 'wake command output');
      else this.sink.log(line);
    });
    const stderrTail = new LineTail();
    splitLines(child.stderr, MAX_OUTPUT_LINE_BYTES, (line) => {
      stderrTail.push(line);
      this.logger.info({ stream: 'stderr', line }, 'wake command stderr');
    });

    const [code, signal] = await exited;
    this.wakeExited = true;
    this.logger.info({ code, signal }, 'wake command ended');
    if (this.decided || this.stopReason !== undefined) return;
    if (code === 0) {
      this.logger.info('the agent is awake: waiting for it to report (done / fail)');
      return;
    }
    const what = code !== null ? `exit code ${code}` : `killed by signal ${signal ?? 'unknown'}`;
    const tail = stderrTail.text();
    this.settle({
      type: 'fail',
      error: truncate(`the wake command failed: ${what}${tail === '' ? '' : `: ${tail}`}`),
      retryable: true,
      kind: 'error',
    });
  }
}

import type { TaskAssign } from '@agentcom/shared';
import type { Logger } from '../logger';
import { spawnGroupLeader, type GroupLeaderChild } from './group-leader';
import type { ProcessGroup } from './process-group';
import { splitLines, type LineSplitter } from './line-splitter';
import { identifyProcess } from './process-identity';
import {
  LineTail,
  MAX_OUTPUT_LINE_BYTES,
  MAX_STDOUT_LINE_BYTES,
  exitOutcome,
  truncate,
  type LastLine,
} from './task-output';
import {
  startDeadline,
  stoppedOutcome,
  type RunOutcome,
  type RunSink,
  type RunningTask,
  type StopReason,
  type TaskRunner,
} from './task-runner';
import { errorText } from '../error-text';

/** After the task's process group is gone, how long its output pipes may stay open (held by an escaped process). */
const STDIO_DRAIN_MS = 1000;

export interface ExecRunnerOptions {
  /** The configured command; never anything from the hub. */
  argv: readonly string[];
  /** The environment of task processes (the task's own variables are added per task). */
  env: Readonly<Record<string, string>>;
  /** SIGTERM → SIGKILL delay when the task is stopped. */
  killGraceMs: number;
  logger: Logger;
}

/**
 * `exec` mode: one process per task, started without a shell in its own process group.
 * The task (`TaskAssign.task`) is written to its stdin as one JSON line; `AGENTCOM_TASK_ID`,
 * `AGENTCOM_TASK_TOKEN` and `AGENTCOM_ATTEMPT` are added to its environment. Each stdout line is
 * a task log line; stderr lines are logged locally and the last ones explain a failure. When the
 * process exits, whatever it left running in its group is terminated too: nothing of a task
 * outlives its outcome.
 */
export class ExecRunner implements TaskRunner {
  constructor(private readonly options: ExecRunnerOptions) {}

  start(assignment: TaskAssign, sink: RunSink): RunningTask {
    return new ExecRun(this.options, assignment, sink);
  }
}

type TaskChild = GroupLeaderChild<'pipe'>;

class ExecRun implements RunningTask {
  readonly outcome: Promise<RunOutcome>;
  private stopReason: StopReason | undefined;
  /** Set once the task's process exited: a stop after that cannot change what it did. */
  private exited = false;
  private group: ProcessGroup | undefined;
  private readonly logger: Logger;

  constructor(
    private readonly options: ExecRunnerOptions,
    private readonly assignment: TaskAssign,
    private readonly sink: RunSink,
  ) {
    this.logger = options.logger.child({ taskId: assignment.task.id, attempt: assignment.attempt });
    this.outcome = this.run().catch(async (err: unknown) => {
      // whatever threw, nothing of the task may outlive its report
      await this.group?.terminate();
      return {
        type: 'fail' as const,
        error: truncate(`the sidecar failed to run the task: ${errorText(err)}`),
        retryable: true,
        kind: 'error' as const,
      };
    });
  }

  stop(reason: StopReason): void {
    if (this.stopReason !== undefined || this.exited) return;
    this.stopReason = reason;
    this.logger.info({ reason }, 'stopping the task');
    void this.group?.terminate();
  }

  killNow(): void {
    this.stopReason ??= 'shutdown';
    this.group?.killNow();
  }

  private async run(): Promise<RunOutcome> {
    // Built before anything is started: a task that cannot be written (a payload nested too deep
    // for JSON.stringify) fails with no process left behind.
    const input = `${JSON.stringify(this.assignment.task)}\n`;
    const leader = spawnGroupLeader({
      argv: this.options.argv,
      what: 'command',
      stdin: 'pipe',
      env: {
        ...this.options.env,
        AGENTCOM_TASK_ID: this.assignment.task.id,
        AGENTCOM_TASK_TOKEN: this.assignment.token,
        AGENTCOM_ATTEMPT: String(this.assignment.attempt),
      },
      killGraceMs: this.options.killGraceMs,
    });
    const { command, child, exited } = leader;
    // At once, in this turn: an exited child is not reaped (its stat gone) before a later one.
    const identity = child.pid === undefined ? undefined : identifyProcess(child.pid);
    this.group = leader.group;
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const started = await leader.started;
    if ('failure' in started) {
      this.logger.error({ command, err: started.failure }, 'could not start the task command');
      return {
        type: 'fail',
        error: `could not start ${command}: ${started.failure}`,
        retryable: true,
        kind: 'error',
      };
    }
    const { group } = started;
    child.on('error', (err) => this.logger.warn({ err: errorText(err) }, 'task process error'));
    this.logger.info({ pid: child.pid }, 'task process started');
    // The child may exit without reading stdin: a broken pipe here is not the task's failure.
    child.stdin.on('error', () => undefined);

    let lastLine: LastLine | undefined;
    const stdoutLines = splitLines(child.stdout, MAX_STDOUT_LINE_BYTES, (line, cut) => {
      if (line.trim() !== '') lastLine = { text: line.trim(), cut };
      this.sink.log(line);
    });
    const stderrTail = new LineTail();
    const stderrLines = splitLines(child.stderr, MAX_OUTPUT_LINE_BYTES, (line) => {
      stderrTail.push(line);
      this.logger.info({ stream: 'stderr', line }, 'task stderr');
    });

    // The task is written only once the process is recorded: a sidecar killed in between leaves
    // a handler that never got its task, or one the next start finds in the state file and stops.
    if (identity !== undefined) await this.sink.started?.(identity);
    if (this.stopReason !== undefined) void group.terminate();
    const cancelDeadline = startDeadline(this.assignment, this);
    child.stdin.end(input);

    const [code, signal] = await exited;
    this.exited = true;
    cancelDeadline();
    const leftovers = group.isAlive();
    if (this.stopReason === undefined && leftovers) {
      this.logger.warn('the task process exited but left processes in its group: terminating them');
    }
    if (this.stopReason !== undefined || leftovers) await group.terminate();
    await this.drainOutput(child, closed, [stdoutLines, stderrLines]);
    this.logger.info({ code, signal, stopReason: this.stopReason }, 'task process ended');

    if (this.stopReason !== undefined) {
      return stoppedOutcome(this.stopReason, this.assignment.timeoutMs);
    }
    return exitOutcome(code, signal, lastLine, stderrTail.text());
  }

  /**
   * Waits for the output pipes to close, unless a process that left the group keeps them open.
   * Closed by force, a pipe never ends: the line it was in (the result, printed without a
   * newline) is emitted as its end would.
   */
  private async drainOutput(
    child: TaskChild,
    closed: Promise<void>,
    splitters: readonly LineSplitter[],
  ): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      closed.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), STDIO_DRAIN_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!drained) {
      this.logger.warn(
        'the task output is still held open by a process outside its group; closing it',
      );
      child.stdout.destroy();
      child.stderr.destroy();
      // after a stream's own end there is no line left: this emits nothing twice
      for (const splitter of splitters) splitter.end();
    }
  }
}

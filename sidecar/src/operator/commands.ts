import type { Readable } from 'node:stream';
import {
  TASK_STATES,
  agentIdSchema,
  createAgentBodySchema,
  queueNameSchema,
  type TaskState,
  type TaskView,
  type TrimmedTask,
} from '@agentcom/shared';
import type { ZodType } from 'zod';
import { listEveryAgent } from './agent-listing';
import {
  ApiError,
  InterruptedError,
  ListingUnstableError,
  OperatorError,
  UsageError,
  isTransient,
} from './errors';
import { OPERATOR_EXIT_CODES, type OperatorExitCode } from './exit-codes';
import {
  formatAgent,
  formatAgentTable,
  formatFields,
  formatQueueTable,
  formatTask,
  formatTaskTable,
  oneLine,
  terminalSafeJson,
  visible,
} from './format';
import { HubClient, type TaskListResponse } from './hub-client';
import { resolveHubSettings, type Env, type HubFlags } from './settings';
import { positiveSeconds, taskBodyFromFlags, wholeNumber, type TaskAddFlags } from './task-input';
import { progressSink, sleep, waitForTask, type WaitOutcome } from './wait';

/** Everything a command touches outside itself: streams, environment, clock, Ctrl-C. */
export interface OperatorIo {
  stdin: Readable;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: Env;
  stdoutIsTty: boolean;
  stderrIsTty: boolean;
  /** The terminal's width (stderr), for the progress line. */
  columns: () => number | undefined;
  /** Aborted on SIGINT. */
  interrupted: AbortSignal;
  now: () => number;
}

/** The options every command takes (commander's globals). */
export interface GlobalFlags extends HubFlags {
  json?: boolean;
}

/** One command's view of the world: its output mode and, once needed, the hub client. */
export class Context {
  private hub: HubClient | undefined;

  constructor(
    readonly io: OperatorIo,
    readonly flags: GlobalFlags,
  ) {}

  get json(): boolean {
    return this.flags.json === true;
  }

  /** The client, resolving the URL and key on first use (exit 5 when they are missing). */
  client(): HubClient {
    this.hub ??= new HubClient(resolveHubSettings(this.flags, this.io.env), this.io.interrupted);
    return this.hub;
  }

  /** Human text on stdout, control characters shown escaped ({@link visible}). */
  out(text: string): void {
    this.io.stdout.write(visible(text.endsWith('\n') ? text : `${text}\n`));
  }

  /** A JSON document on stdout (indented; `compact` for one line per value, as `--watch` prints). */
  printJson(value: unknown, compact = false): void {
    const json = compact ? JSON.stringify(value) : JSON.stringify(value, null, 2);
    this.io.stdout.write(`${terminalSafeJson(json)}\n`);
  }

  /** A remark on stderr, `agentcom: ...`: never mixed into the output scripts read. */
  note(text: string): void {
    this.io.stderr.write(`agentcom: ${visible(oneLine(text))}\n`);
  }

  /** Reports a failure: one line on stderr; with `--json`, the error body on stdout too. */
  fail(err: OperatorError): OperatorExitCode {
    this.io.stderr.write(`agentcom: ${err.code}: ${visible(oneLine(err.message))}\n`);
    if (this.json) this.printJson(err.body());
    return err.exitCode;
  }
}

// ---- tasks -----------------------------------------------------------------------------------

/** How many times `task list --all` follows the same cursor before it gives up. */
const MAX_CURSOR_REPEATS = 3;

const OUTCOME_EXIT: Record<'completed' | 'failed' | 'cancelled', OperatorExitCode> = {
  completed: OPERATOR_EXIT_CODES.OK,
  failed: OPERATOR_EXIT_CODES.API_ERROR,
  cancelled: OPERATOR_EXIT_CODES.CANCELLED,
};

/** `task add`: creates the task; with `--wait`, follows it and exits with its outcome. */
export async function taskAdd(ctx: Context, flags: TaskAddFlags): Promise<OperatorExitCode> {
  const waitTimeoutS = positiveSeconds(flags.waitTimeoutS, '--wait-timeout-s');
  const wait = flags.wait === true || waitTimeoutS !== undefined;
  const body = await taskBodyFromFlags(flags, ctx.io.stdin, ctx.io.interrupted);
  const client = ctx.client();
  const created = (await client.createTask(body)).body;
  if (created.duplicate === true) {
    ctx.note(
      `idempotency key ${body.idempotencyKey ?? ''} already names task ${created.id} (${created.state}): no new task`,
    );
  }
  if (!wait) {
    if (ctx.json) ctx.printJson(created);
    else ctx.out(created.id);
    return OPERATOR_EXIT_CODES.OK;
  }
  const mode = flags.quiet === true ? 'quiet' : ctx.io.stderrIsTty ? 'tty' : 'lines';
  let outcome: WaitOutcome;
  try {
    outcome = await waitForTask(client, created.id, {
      ...(waitTimeoutS !== undefined ? { timeoutMs: waitTimeoutS * 1000 } : {}),
      progress: progressSink(ctx.io.stderr, mode, ctx.io.columns),
      signal: ctx.io.interrupted,
      now: ctx.io.now,
    });
  } catch (err) {
    const state = created.state;
    // A repeated idempotency key may name a task that finished and that retention trimmed since:
    // the hub answered its outcome, but no longer shows the task itself.
    // (a hub of an earlier version answers it 404, one of this version 410 with the outcome)
    const finished = state === 'completed' || state === 'failed' || state === 'cancelled';
    if (!finished || !(err instanceof ApiError) || err.code !== 'E_TASK_NOT_FOUND') throw err;
    return printOutcomeOnly(ctx, { id: created.id, state }, created.duplicate === true);
  }
  if (outcome.kind === 'trimmed') {
    return printOutcomeOnly(ctx, outcome.task, created.duplicate === true);
  }
  return finishWait(ctx, created.id, outcome, waitTimeoutS);
}

/**
 * A finished task the hub no longer keeps (retention): its id and outcome, all that is known, and
 * the outcome's exit code. With `--json`, `duplicate` too when the create named an earlier task.
 */
function printOutcomeOnly(ctx: Context, task: TrimmedTask, duplicate: boolean): OperatorExitCode {
  ctx.note(`task ${task.id} is no longer kept by the hub: its outcome only is known`);
  if (ctx.json) ctx.printJson(duplicate ? { ...task, duplicate } : task);
  else
    ctx.out(
      formatFields([
        ['id', task.id],
        ['state', task.state],
      ]),
    );
  return OUTCOME_EXIT[task.state];
}

function finishWait(
  ctx: Context,
  taskId: string,
  outcome: Exclude<WaitOutcome, { kind: 'trimmed' }>,
  waitTimeoutS: number | undefined,
): OperatorExitCode {
  if (outcome.kind === 'interrupted') {
    const state = outcome.task ? ` (${outcome.task.state})` : '';
    throw new InterruptedError(
      `stopped waiting; task ${taskId}${state} goes on: \`agentcom task cancel ${taskId}\` stops it`,
    );
  }
  printTask(ctx, outcome.task);
  if (outcome.kind === 'timeout') {
    ctx.note(
      `gave up waiting after ${waitTimeoutS ?? 0} s: task ${taskId} is ${outcome.task.state} and goes on`,
    );
    return OPERATOR_EXIT_CODES.WAIT_TIMEOUT;
  }
  const state = outcome.task.state;
  return state === 'completed' || state === 'failed' || state === 'cancelled'
    ? OUTCOME_EXIT[state]
    : OPERATOR_EXIT_CODES.OK;
}

function printTask(ctx: Context, task: TaskView): void {
  if (ctx.json) ctx.printJson(task);
  else ctx.out(formatTask(task, ctx.io.now()));
}

/** `--queue` of the commands of one task: the task's queue (an id is unique in its queue only). */
export interface TaskQueueFlag {
  queue?: string;
}

function queueOf(flags: TaskQueueFlag): string | undefined {
  return flags.queue === undefined ? undefined : checked(queueNameSchema, flags.queue, '--queue');
}

export async function taskGet(
  ctx: Context,
  id: string,
  flags: TaskQueueFlag = {},
): Promise<OperatorExitCode> {
  printTask(ctx, await ctx.client().getTask(id, { queue: queueOf(flags) }));
  return OPERATOR_EXIT_CODES.OK;
}

export interface TaskListFlags {
  queue?: string;
  state?: string;
  limit?: string;
  cursor?: string;
  all?: boolean;
}

/** `task list`: one page, or with `--all` every page (following `nextCursor`). */
export async function taskList(ctx: Context, flags: TaskListFlags): Promise<OperatorExitCode> {
  if (flags.state !== undefined && !(TASK_STATES as readonly string[]).includes(flags.state)) {
    throw new UsageError('--state', `must be one of ${TASK_STATES.join(', ')}`);
  }
  if (flags.queue !== undefined) checked(queueNameSchema, flags.queue, '--queue');
  const limit = wholeNumber(flags.limit, '--limit');
  if (limit !== undefined && (limit < 1 || limit > 500)) {
    throw new UsageError('--limit', 'must be from 1 to 500');
  }
  const client = ctx.client();
  const query = {
    queue: flags.queue,
    state: flags.state as TaskState | undefined,
    limit,
  };
  let page: TaskListResponse = await client.listTasks({ ...query, cursor: flags.cursor });
  const tasks = [...page.tasks];
  if (flags.all === true) {
    // The hub may start a list over (both tasks its cursor named left it meanwhile) and then
    // hand out a cursor this walk followed before: followed again, up to a bound; a task listed
    // twice is shown once.
    const listed = new Set(tasks.map((task) => task.id));
    const followed = new Map<string, number>();
    while (page.nextCursor !== undefined) {
      const times = (followed.get(page.nextCursor) ?? 0) + 1;
      if (times > MAX_CURSOR_REPEATS) {
        throw new ListingUnstableError(
          `the listing started over ${MAX_CURSOR_REPEATS} times (tasks leaving it while it was read); run it again`,
        );
      }
      followed.set(page.nextCursor, times);
      page = await client.listTasks({ ...query, cursor: page.nextCursor });
      for (const task of page.tasks) {
        if (listed.has(task.id)) continue;
        listed.add(task.id);
        tasks.push(task);
      }
    }
  }
  if (ctx.json) {
    ctx.printJson(flags.all === true ? { tasks } : page);
    return OPERATOR_EXIT_CODES.OK;
  }
  if (tasks.length === 0) ctx.note('no tasks');
  else ctx.out(formatTaskTable(tasks, ctx.io.now()));
  if (flags.all !== true && page.nextCursor !== undefined) {
    ctx.note(`more tasks: --cursor ${page.nextCursor} for the next page, or --all`);
  }
  return OPERATOR_EXIT_CODES.OK;
}

export async function taskCancel(
  ctx: Context,
  id: string,
  flags: TaskQueueFlag & { reason?: string },
): Promise<OperatorExitCode> {
  const outcome = await ctx.client().cancelTask(id, flags.reason, queueOf(flags));
  if (ctx.json) ctx.printJson(outcome);
  else if (outcome.cancelRequested === true) {
    ctx.out(`cancel requested: task ${outcome.id} is ${outcome.state}; its agent was told to stop`);
  } else ctx.out(`cancelled ${outcome.id}`);
  return OPERATOR_EXIT_CODES.OK;
}

export async function taskRetry(
  ctx: Context,
  id: string,
  flags: TaskQueueFlag = {},
): Promise<OperatorExitCode> {
  const retried = await ctx.client().retryTask(id, queueOf(flags));
  if (ctx.json) ctx.printJson(retried);
  else ctx.out(`retrying ${retried.id}: ${retried.state}`);
  return OPERATOR_EXIT_CODES.OK;
}

export async function taskLogs(
  ctx: Context,
  id: string,
  flags: TaskQueueFlag & { start?: string; limit?: string },
): Promise<OperatorExitCode> {
  const start = wholeNumber(flags.start, '--start');
  const limit = wholeNumber(flags.limit, '--limit');
  if (limit !== undefined && (limit < 1 || limit > 1000)) {
    throw new UsageError('--limit', 'must be from 1 to 1000');
  }
  const logs = await ctx.client().taskLogs(id, { queue: queueOf(flags), start, limit });
  if (ctx.json) {
    ctx.printJson(logs);
    return OPERATOR_EXIT_CODES.OK;
  }
  for (const line of logs.logs) ctx.out(line);
  const next = (start ?? 0) + logs.logs.length;
  if (next < logs.count) {
    ctx.note(`lines ${start ?? 0}-${next - 1} of ${logs.count}: --start ${next} for more`);
  }
  return OPERATOR_EXIT_CODES.OK;
}

// ---- agents ----------------------------------------------------------------------------------

export interface AgentsFlags {
  watch?: boolean;
  intervalS?: string;
  /** Hidden: stop `--watch` after this many refreshes (tests). */
  watchCount?: string;
}

/** `agents`: the table once, or with `--watch` redrawn every `--interval-s` until Ctrl-C. */
export async function agentsCommand(ctx: Context, flags: AgentsFlags): Promise<OperatorExitCode> {
  const intervalS = positiveSeconds(flags.intervalS, '--interval-s', 3600) ?? 2;
  const count = wholeNumber(flags.watchCount, '--watch-count');
  const client = ctx.client();
  if (flags.watch !== true) {
    const agents = await listEveryAgent(client);
    if (ctx.json) ctx.printJson({ agents });
    else if (agents.length === 0) ctx.note('no agents');
    else ctx.out(formatAgentTable(agents, ctx.io.now()));
    return OPERATOR_EXIT_CODES.OK;
  }
  const signal = ctx.io.interrupted;
  let refreshes = 0;
  while (!signal.aborted) {
    try {
      // every page at each refresh: a fleet larger than the screen still shows each agent (a
      // pipe, --json), and each request reads only its page, so no refresh costs one huge read
      const agents = await listEveryAgent(client);
      drawAgents(ctx, agents, intervalS);
    } catch (err) {
      if (signal.aborted || err instanceof InterruptedError) break;
      // The first refresh must work (a wrong key fails at once); later ones ride out a restart.
      if (refreshes === 0 || !isTransient(err)) throw err;
      ctx.note(`${err instanceof Error ? err.message : String(err)} (trying again)`);
    }
    refreshes += 1;
    if (count !== undefined && refreshes >= count) break;
    await sleep(intervalS * 1000, signal);
  }
  return OPERATOR_EXIT_CODES.OK;
}

function drawAgents(
  ctx: Context,
  agents: Parameters<typeof formatAgentTable>[0],
  intervalS: number,
): void {
  if (ctx.json) {
    ctx.printJson({ agents }, true);
    return;
  }
  const now = ctx.io.now();
  const header = `${agents.length} agent${agents.length === 1 ? '' : 's'} at ${new Date(now).toISOString()}, every ${intervalS} s (Ctrl-C to stop)`;
  const table = agents.length === 0 ? '' : formatAgentTable(agents, now);
  // A terminal is redrawn in place (cursor home, clear screen); a pipe gets one block per refresh.
  const clear = ctx.io.stdoutIsTty ? '\x1b[H\x1b[2J' : '';
  ctx.io.stdout.write(
    `${clear}${visible(`${header}\n\n${table}`)}${ctx.io.stdoutIsTty ? '' : '\n'}`,
  );
}

export async function agentGet(ctx: Context, id: string): Promise<OperatorExitCode> {
  const agent = await ctx.client().getAgent(id);
  if (ctx.json) ctx.printJson(agent);
  else ctx.out(formatAgent(agent, ctx.io.now()));
  return OPERATOR_EXIT_CODES.OK;
}

/**
 * `agent token create`: mints (or rotates) the agent's token. Human output is the token line
 * alone, so `TOKEN=$(agentcom agent token create laptop-1)` works; it is shown only this once.
 */
export async function agentTokenCreate(
  ctx: Context,
  agentId: string,
  flags: { queue: string[] },
): Promise<OperatorExitCode> {
  const queues = flags.queue.flatMap((queue) => queue.split(',')).filter((queue) => queue !== '');
  // checked as the hub checks them, so a malformed value is bad usage (exit 2), as in a path
  const id = JSON.stringify(agentId);
  checked(agentIdSchema, agentId, `agent id ${id}`, false);
  if (queues.length > 0) checked(createAgentBodySchema.shape.queues, queues, '--queue');
  const created = await ctx
    .client()
    .createAgentToken(agentId, queues.length > 0 ? queues : undefined);
  if (ctx.json) ctx.printJson(created.body);
  else ctx.out(created.body.token);
  if (ctx.io.stderrIsTty) {
    ctx.note(
      created.status === 201
        ? `agent ${agentId} created; its token is shown this once`
        : `token of agent ${agentId} rotated: the previous one no longer works; the new one is shown this once`,
    );
  }
  return OPERATOR_EXIT_CODES.OK;
}

export async function agentTokenRevoke(ctx: Context, id: string): Promise<OperatorExitCode> {
  const revoked = await ctx.client().revokeAgent(id);
  if (ctx.json) ctx.printJson(revoked);
  else ctx.out(`revoked ${revoked.agentId}: its token no longer works, it was disconnected`);
  return OPERATOR_EXIT_CODES.OK;
}

export async function agentDrain(ctx: Context, id: string): Promise<OperatorExitCode> {
  const drained = await ctx.client().drainAgent(id);
  if (ctx.json) ctx.printJson(drained);
  else ctx.out(`${drained.agentId} ${drained.state}`);
  return OPERATOR_EXIT_CODES.OK;
}

export async function agentResume(ctx: Context, id: string): Promise<OperatorExitCode> {
  const resumed = await ctx.client().resumeAgent(id);
  if (ctx.json) ctx.printJson(resumed);
  else ctx.out(`${resumed.agentId} ${resumed.state}`);
  return OPERATOR_EXIT_CODES.OK;
}

// ---- queues ----------------------------------------------------------------------------------

export async function queuesCommand(ctx: Context): Promise<OperatorExitCode> {
  const queues = await ctx.client().listQueues();
  if (ctx.json) ctx.printJson({ queues });
  else if (queues.length === 0) ctx.note('no queues');
  else ctx.out(formatQueueTable(queues));
  return OPERATOR_EXIT_CODES.OK;
}

/**
 * A value checked with the hub's own schema before anything is sent: refused, it is bad usage
 * (`E_USAGE`, exit 2) naming `what`, not a request the hub answers `E_VALIDATION` (exit 1).
 * `asOption`: `what` is an option (`--queue: ...`), else the message's own subject.
 */
function checked<T>(schema: ZodType<T>, value: unknown, what: string, asOption = true): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  const message = `${where}${issue?.message ?? 'not valid'}`;
  throw asOption ? new UsageError(what, message) : new UsageError(undefined, `${what}: ${message}`);
}

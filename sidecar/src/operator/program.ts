import { Command, CommanderError, Option } from 'commander';
import { SIDECAR_VERSION } from '../version';
import {
  Context,
  agentDrain,
  agentGet,
  agentResume,
  agentTokenCreate,
  agentTokenRevoke,
  agentsCommand,
  queuesCommand,
  taskAdd,
  taskCancel,
  taskGet,
  taskList,
  taskLogs,
  taskRetry,
  type AgentsFlags,
  type GlobalFlags,
  type OperatorIo,
  type TaskListFlags,
  type TaskQueueFlag,
} from './commands';
import { OperatorError, UsageError } from './errors';
import { OPERATOR_EXIT_CODES } from './exit-codes';
import { refuseKeyInArgv } from './settings';
import type { TaskAddFlags } from './task-input';

/** `--queue` of the commands of one task. */
const QUEUE_HELP =
  "the task's queue, for an id another queue's task has too (ids a BullMQ producer leaves to BullMQ count per queue)";

const HELP_AFTER = `
Environment:
  AGENTCOM_URL              the hub's URL, e.g. http://localhost:8080 (or --url)
  AGENTCOM_ADMIN_KEY        the admin key (or AGENTCOM_ADMIN_KEY_FILE / --admin-key-file:
                            an owner-only file holding it); never taken from argv

Exit codes:
  0  done; task add --wait: the task completed
  1  the hub answered with an error (agentcom: E_CODE: message); --wait: the task failed
  2  bad usage: unknown command or option, malformed value, payload not JSON
  3  task add --wait: the task was cancelled
  4  task add --wait: --wait-timeout-s ran out (the task goes on)
  5  no hub: URL or admin key missing or unreadable, or the hub did not answer
  130  Ctrl-C (agents --watch exits 0)`;

/**
 * `agentcom`, the operator CLI: the hub's HTTP API from a shell. Parses `argv` (as
 * `process.argv`: node, script, args...), runs the command and returns its exit code (see
 * exit-codes.ts); never calls `process.exit` itself.
 */
export async function runOperatorCli(argv: readonly string[], io: OperatorIo): Promise<number> {
  let exitCode: number = OPERATOR_EXIT_CODES.OK;

  /** Runs one command with the global flags, turning its failures into their exit codes. */
  const run =
    <A extends unknown[]>(command: (ctx: Context, ...args: A) => Promise<number>) =>
    async (ctx: Context, ...args: A): Promise<void> => {
      try {
        exitCode = await command(ctx, ...args);
      } catch (err) {
        if (!(err instanceof OperatorError)) throw err;
        exitCode = ctx.fail(err);
      }
    };
  const contextOf = (command: Command): Context =>
    new Context(io, command.optsWithGlobals<GlobalFlags>());

  const program = new Command('agentcom')
    .description('Operate an agentcom hub over its HTTP API: tasks, agents, queues.')
    .version(SIDECAR_VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      // Reported from the CommanderError it throws next, as every failure is (see below).
      outputError: () => undefined,
    })
    .option('--url <url>', "the hub's URL (AGENTCOM_URL)")
    .option(
      '--admin-key-file <file>',
      'owner-only file holding the admin key (AGENTCOM_ADMIN_KEY_FILE; or AGENTCOM_ADMIN_KEY)',
    )
    .option('--json', 'print JSON (errors too: {"error":{code,message}} on stdout)')
    .addOption(
      new Option('--admin-key <key>', 'refused: the key never goes in argv')
        .hideHelp()
        .argParser((): string => refuseKeyInArgv()),
    )
    .addHelpText('after', HELP_AFTER);

  // ---- task ----
  const task = program.command('task').description('create, inspect, cancel and retry tasks');

  task
    .command('add')
    .description('create a task; --wait follows it and exits with its outcome (0/1/3/4)')
    .option('--queue <name>', 'queue', 'default')
    .requiredOption('--payload <json>', 'the payload: JSON text, @file.json, or - for stdin')
    .option(
      '--priority <n>',
      '1 to 2097151, lower runs first among prioritized tasks, which run after unprioritized ones (BullMQ priority); none by default',
    )
    .option('--delay-ms <ms>', 'run no sooner than this from now')
    .option('--attempts <n>', 'attempts before it fails (hub default 3)')
    .option('--backoff <type:ms>', 'between attempts: fixed:MS or exponential:MS')
    .option('--timeout-ms <ms>', 'run time limit of one attempt (at least 100)')
    .option('--idempotency-key <key>', 'a repeat with the same key returns the first task')
    .option('--label <key=value>', 'a label; repeat for more', collect, [])
    .option('--wait', 'wait for the end, showing progress on stderr, then print the task')
    .option('--wait-timeout-s <s>', 'give up waiting after this long (exit 4; implies --wait)')
    .option('-q, --quiet', 'no progress on stderr while waiting')
    .action((flags: TaskAddFlags, command: Command) => run(taskAdd)(contextOf(command), flags));

  task
    .command('get')
    .description('show a task: state, agent, attempt, result, error, timestamps')
    .argument('<id>', 'task id')
    .option('--queue <name>', QUEUE_HELP)
    .action((id: string, flags: TaskQueueFlag, command: Command) =>
      run(taskGet)(contextOf(command), id, flags),
    );

  task
    .command('list')
    .description('list tasks: id, queue, state, agent, attempt, age')
    .option('--queue <name>', 'only this queue')
    .option(
      '--state <state>',
      'only this state: waiting, delayed, assigned, running, completed, failed, cancelled',
    )
    .option('--limit <n>', 'tasks per page, 1 to 500 (default 50)')
    .option('--cursor <cursor>', 'the page after the one that printed this cursor')
    .option('--all', 'every page, not only the first')
    .action((flags: TaskListFlags, command: Command) => run(taskList)(contextOf(command), flags));

  task
    .command('cancel')
    .description('cancel a task: removed if waiting; if running, its agent is told to stop')
    .argument('<id>', 'task id')
    .option('--reason <text>', 'shown as the task error')
    .option('--queue <name>', QUEUE_HELP)
    .action((id: string, flags: TaskQueueFlag & { reason?: string }, command: Command) =>
      run(taskCancel)(contextOf(command), id, flags),
    );

  task
    .command('retry')
    .description('run a failed or cancelled task again, with fresh attempts')
    .argument('<id>', 'task id')
    .option('--queue <name>', QUEUE_HELP)
    .action((id: string, flags: TaskQueueFlag, command: Command) =>
      run(taskRetry)(contextOf(command), id, flags),
    );

  task
    .command('logs')
    .description("print a task's log lines (its handler's stdout)")
    .argument('<id>', 'task id')
    .option('--start <n>', 'first line (default 0)')
    .option('--limit <n>', 'lines, 1 to 1000 (default 100)')
    .option('--queue <name>', QUEUE_HELP)
    .action(
      (id: string, flags: TaskQueueFlag & { start?: string; limit?: string }, command: Command) =>
        run(taskLogs)(contextOf(command), id, flags),
    );

  // ---- agents ----
  program
    .command('agents')
    .description('list agents: state, queues, replica, current task, heartbeat, done/failed')
    .option('--watch', 'redraw until Ctrl-C (with --json: one JSON line per refresh)')
    .option('--interval-s <s>', 'seconds between redraws (default 2)')
    .addOption(new Option('--watch-count <n>', 'stop after N redraws').hideHelp())
    .action((flags: AgentsFlags, command: Command) =>
      run(agentsCommand)(contextOf(command), flags),
    );

  const agent = program.command('agent').description('one agent: show, tokens, drain, resume');

  agent
    .command('get')
    .description('show an agent')
    .argument('<id>', 'agent id')
    .action((id: string, _flags: unknown, command: Command) =>
      run(agentGet)(contextOf(command), id),
    );

  const token = agent.command('token').description("mint or revoke an agent's token");

  token
    .command('create')
    .description(
      'mint a token (creating the agent, or rotating its token); prints the token alone, shown once',
    )
    .argument('<id>', 'agent id')
    .option('--queue <name>', 'a queue it serves; repeat or comma-separate', collect, [])
    .action((id: string, flags: { queue: string[] }, command: Command) =>
      run(agentTokenCreate)(contextOf(command), id, flags),
    );

  token
    .command('revoke')
    .description('revoke the token and disconnect the agent on every replica')
    .argument('<id>', 'agent id')
    .action((id: string, _flags: unknown, command: Command) =>
      run(agentTokenRevoke)(contextOf(command), id),
    );

  agent
    .command('drain')
    .description('let the agent finish its task and take no new one')
    .argument('<id>', 'agent id')
    .action((id: string, _flags: unknown, command: Command) =>
      run(agentDrain)(contextOf(command), id),
    );

  agent
    .command('resume')
    .description('lift a drain')
    .argument('<id>', 'agent id')
    .action((id: string, _flags: unknown, command: Command) =>
      run(agentResume)(contextOf(command), id),
    );

  // ---- queues ----
  program
    .command('queues')
    .description('per queue: waiting, active, delayed, completed, failed tasks and idle agents')
    .action((_flags: unknown, command: Command) => run(queuesCommand)(contextOf(command)));

  program
    .command('version')
    .description('print the version')
    .action(() => {
      io.stdout.write(`${SIDECAR_VERSION}\n`);
    });

  try {
    await program.parseAsync([...argv]);
  } catch (err) {
    // `--help` and `--version` (exit 0), and the help a command without its subcommand prints
    // on stderr (`agentcom task`): printed already.
    if (err instanceof CommanderError && (err.exitCode === 0 || err.code === 'commander.help')) {
      return err.exitCode === 0 ? OPERATOR_EXIT_CODES.OK : OPERATOR_EXIT_CODES.USAGE;
    }
    // An unknown command or option, a missing argument or required option: E_USAGE, reported as
    // the commands report theirs. The global flags (`--json`) are parsed wherever they stand.
    if (err instanceof CommanderError) {
      return new Context(io, program.opts<GlobalFlags>()).fail(UsageError.fromParser(err.message));
    }
    // `--admin-key` (refused while parsing, before any command ran)
    if (err instanceof OperatorError) {
      return new Context(io, program.opts<GlobalFlags>()).fail(err);
    }
    throw err;
  }
  return exitCode;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

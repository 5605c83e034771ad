import { Command, CommanderError } from 'commander';
import type { RunFlags } from './config';
import { EXIT_CODES } from './exit-codes';
import {
  doneCommand,
  failCommand,
  statusCommand,
  type DoneFlags,
  type FailFlags,
  type LocalIo,
  type StatusFlags,
} from './ipc/local-commands';
import { runCommand } from './run-command';
import { SIDECAR_VERSION } from './version';

/**
 * `agentcom-sidecar`: the entry point (the bundle adds the `#!/usr/bin/env node` line).
 * Parses the command line, runs the command, exits with its code (see exit-codes.ts).
 */
async function main(argv: string[]): Promise<number> {
  let exitCode: number = EXIT_CODES.OK;
  const io: LocalIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
  const program = new Command('agentcom-sidecar')
    .description('Connects this machine to an agentcom hub and runs the tasks it assigns.')
    .version(SIDECAR_VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({
      // One line, whatever commander adds (e.g. "(Did you mean --hub?)" on a line of its own).
      outputError: (text, write) =>
        write(
          `agentcom-sidecar: ${text
            .replace(/^error: /, '')
            .trim()
            .replace(/\s*\n\s*/g, ' ')}\n`,
        ),
    });

  program
    .command('run')
    .description(
      'run the sidecar daemon (every option can also come from the environment or the config file)',
    )
    .option(
      '--config <file>',
      'config file (AGENTCOM_CONFIG; default ~/.config/agentcom/sidecar.json)',
    )
    .option('--hub <urls>', 'hub URL(s), comma-separated (AGENTCOM_HUB)')
    .option('--agent <id>', 'agent id (AGENTCOM_AGENT)')
    .option(
      '--token-file <path>',
      'owner-only file holding the agent token (AGENTCOM_TOKEN_FILE; or AGENTCOM_TOKEN)',
    )
    .option(
      '--queue <name>',
      'queue to serve; repeat or comma-separate (AGENTCOM_QUEUES)',
      collect,
      [],
    )
    .option(
      '--label <key=value>',
      "this agent's label, shown by the hub; repeat or comma-separate (AGENTCOM_LABELS)",
      collect,
      [],
    )
    .option(
      '--exec <command>',
      'command run per task, split like a shell but never run by one (AGENTCOM_EXEC)',
    )
    .option(
      '--wake <command>',
      'command that wakes the agent per task; it reports with done/fail (AGENTCOM_WAKE)',
    )
    .option(
      '--state-dir <dir>',
      'state dir (AGENTCOM_STATE_DIR; default ~/.local/state/agentcom/<agent>)',
    )
    .option('--heartbeat-ms <ms>', 'heartbeat period (AGENTCOM_HEARTBEAT_MS; default 5000)')
    .option(
      '--drain-grace-ms <ms>',
      'wait for the task on SIGTERM (AGENTCOM_DRAIN_GRACE_MS; default 30000)',
    )
    .option(
      '--kill-grace-ms <ms>',
      'SIGTERM → SIGKILL delay for a task (AGENTCOM_KILL_GRACE_MS; default 5000)',
    )
    .option('--ack-timeout-ms <ms>', 'wait for a hub ack (AGENTCOM_ACK_TIMEOUT_MS; default 10000)')
    .option(
      '--failover-attempts <n>',
      'failed connection attempts per hub URL before the next (AGENTCOM_FAILOVER_ATTEMPTS; default 3)',
    )
    .option(
      '--handshake-timeout-ms <ms>',
      'a hub handshake taking longer is a failed attempt (AGENTCOM_HANDSHAKE_TIMEOUT_MS; default 20000)',
    )
    .option(
      '--log-level <level>',
      'fatal|error|warn|info|debug|trace|silent (LOG_LEVEL; default info)',
    )
    .option(
      '--log-file <file>',
      'append the JSON logs to FILE instead of stderr (AGENTCOM_LOG_FILE)',
    )
    .action(async (flags: RunFlags) => {
      exitCode = await runCommand(flags, process.stderr);
    });

  localOptions(
    program
      .command('status')
      .description('show the running sidecar: connection, agent state, task, outbox')
      .option('--json', 'print one JSON object'),
  ).action(async (flags: StatusFlags) => {
    exitCode = await statusCommand(flags, io);
  });

  localOptions(
    program
      .command('done')
      .description('wake mode: the task in hand is done (its result goes to the hub)')
      .option('--result <file>', 'the result as JSON, from FILE or - for stdin (default null)')
      .option('--task <id>', 'only if this is the task in hand')
      .option(
        '--run <id>',
        'only if this is the run in hand (`run` of current.json, AGENTCOM_RUN_ID)',
      ),
  ).action(async (flags: DoneFlags) => {
    exitCode = await doneCommand(flags, io);
  });

  localOptions(
    program
      .command('fail')
      .description('wake mode: the task in hand failed')
      .requiredOption('--reason <text>', 'why it failed (shown in the hub)')
      .option(
        '--retry-after <seconds>',
        'rate limited: the hub pauses this agent and requeues the task without using an attempt',
      )
      .option('--no-retry', 'the task must not be retried')
      .option('--task <id>', 'only if this is the task in hand')
      .option(
        '--run <id>',
        'only if this is the run in hand (`run` of current.json, AGENTCOM_RUN_ID)',
      ),
  ).action(async (flags: FailFlags) => {
    exitCode = await failCommand(flags, io);
  });

  program
    .command('version')
    .description('print the version')
    .action(() => {
      process.stdout.write(`${SIDECAR_VERSION}\n`);
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT_CODES.OK : EXIT_CODES.BAD_CONFIG;
    }
    throw err;
  }
  return exitCode;
}

/** How the local commands find the running sidecar: as `run` resolves its state dir. */
function localOptions(command: Command): Command {
  return command
    .option('--state-dir <dir>', "the sidecar's state dir (AGENTCOM_STATE_DIR)")
    .option('--agent <id>', 'agent id, for the default state dir (AGENTCOM_AGENT)')
    .option(
      '--config <file>',
      'config file (AGENTCOM_CONFIG; default ~/.config/agentcom/sidecar.json)',
    );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

main(process.argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `agentcom-sidecar: unexpected error: ${err instanceof Error ? err.stack : String(err)}\n`,
    );
    process.exit(EXIT_CODES.UNEXPECTED);
  },
);

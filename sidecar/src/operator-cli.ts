import { runOperatorCli } from './operator/program';
import { OPERATOR_EXIT_CODES } from './operator/exit-codes';

/**
 * `agentcom`: the operator CLI over the hub's HTTP API (bundled to dist/agentcom.js; the bundle
 * adds the `#!/usr/bin/env node` line). See sidecar/README.md, "Operator CLI".
 */
const interrupt = new AbortController();
process.on('SIGINT', () => {
  // The first Ctrl-C stops the command (a wait, a watch, a request); a second one at once.
  if (interrupt.signal.aborted) process.exit(OPERATOR_EXIT_CODES.INTERRUPTED);
  interrupt.abort();
});

/** Exits once stdout and stderr took everything (a pipe may still hold a big `--json` list). */
function exitAfterFlush(code: number): void {
  let pending = 2;
  const done = (): void => {
    pending -= 1;
    if (pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

runOperatorCli(process.argv, {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  stdoutIsTty: process.stdout.isTTY === true,
  stderrIsTty: process.stderr.isTTY === true,
  columns: () => process.stderr.columns,
  interrupted: interrupt.signal,
  now: Date.now,
}).then(exitAfterFlush, (err: unknown) => {
  process.stderr.write(
    `agentcom: unexpected error: ${err instanceof Error ? err.stack : String(err)}\n`,
  );
  exitAfterFlush(OPERATOR_EXIT_CODES.API_ERROR);
});

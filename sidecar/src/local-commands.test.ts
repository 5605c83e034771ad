import { existsSync } from 'node:fs';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskAssign } from '@agentcom/shared';
import { EXIT_CODES, LOCAL_EXIT_CODES } from './exit-codes';
import { sidecarStatusSchema } from './ipc/ipc-protocol';
import type { CliRun } from './test-support/cli-process';
import { assignment, useCliFixture } from './test-support/cli-fixture';

/**
 * Wake mode and the local commands, end to end: the bundled CLI runs the sidecar against the
 * scripted hub, and other CLI processes (`done`, `fail`, `status`) talk to it over its socket.
 * The bundle is built once per file (`useCliFixture`).
 */

/** Wake command: records what it saw in $WAKE_LOG, prints `woke <task id>` (a task log line), exits $WAKE_EXIT. */
const WAKE = `
  const fs = require('node:fs');
  const file = process.env.AGENTCOM_TASK_FILE;
  const present = fs.existsSync(file);
  fs.appendFileSync(process.env.WAKE_LOG, JSON.stringify({
    taskId: process.env.AGENTCOM_TASK_ID,
    attempt: process.env.AGENTCOM_ATTEMPT,
    run: process.env.AGENTCOM_RUN_ID,
    stateDir: process.env.AGENTCOM_STATE_DIR,
    file,
    present,
    mode: present ? (fs.statSync(file).mode & 0o777).toString(8) : null,
    task: present ? JSON.parse(fs.readFileSync(file, 'utf8')) : null,
  }) + '\\n');
  console.log('woke ' + process.env.AGENTCOM_TASK_ID);
  if (process.env.WAKE_EXIT !== '0') console.error('the agent would not wake up');
  process.exit(Number(process.env.WAKE_EXIT));
`;

const cx = useCliFixture({ 'wake.js': WAKE });

const stateDir = (): string => join(cx.work, 'state');

function sidecarEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    HOME: cx.work,
    AGENTCOM_HUB: cx.hub.url,
    AGENTCOM_AGENT: 'sleeper',
    AGENTCOM_TOKEN: 'agent-secret',
    AGENTCOM_QUEUES: 'default',
    AGENTCOM_WAKE: `'${process.execPath}' '${join(cx.dir, 'wake.js')}'`,
    AGENTCOM_STATE_DIR: stateDir(),
    WAKE_LOG: join(cx.work, 'wake.log'),
    WAKE_EXIT: '0',
    ...overrides,
  };
}

/** The environment of a local command run from another shell: it finds the sidecar by state dir. */
function localEnv(): Record<string, string> {
  return { HOME: cx.work, AGENTCOM_STATE_DIR: stateDir() };
}

/** Starts the sidecar and waits until the hub sees its handshake (its socket is up by then). */
async function startSidecar(overrides: Record<string, string> = {}): Promise<CliRun> {
  const connected = cx.hub.connection({ fresh: true });
  const run = cx.cli.start(['run'], sidecarEnv(overrides));
  await Promise.race([
    connected,
    run.exited.then(({ code }) => {
      throw new Error(`the sidecar exited (${String(code)}): ${run.stderr()}`);
    }),
  ]);
  return run;
}

/** Assigns a task and resolves once the wake command ran (its `woke` line reached the hub). */
async function assignAndWake(
  taskId: string,
  overrides: Partial<TaskAssign> = {},
): Promise<Record<string, unknown>> {
  const { socket } = await cx.hub.connection();
  const woke = cx.hub.nextEvent('task:log', (message) =>
    JSON.stringify(message.lines).includes(`woke ${taskId}`),
  );
  socket.emit('task:assign', { ...assignment(taskId, { ask: 'fix the bug' }), ...overrides });
  await woke;
  const lines = (await readFile(join(cx.work, 'wake.log'), 'utf8')).trim().split('\n');
  return JSON.parse(lines[lines.length - 1] as string) as Record<string, unknown>;
}

async function stopSidecar(run: CliRun): Promise<void> {
  run.child.kill('SIGTERM');
  expect(await run.exited).toEqual({ code: EXIT_CODES.OK, signal: null });
}

describe('wake mode (bundled CLI processes)', () => {
  it('wakes the agent with current.json, and completes the task with what `done --result -` reads', async () => {
    const sidecar = await startSidecar();
    const wake = await assignAndWake('t1');
    expect(wake.run).toMatch(/^[0-9a-f]{16}$/);
    expect(wake).toEqual({
      taskId: 't1',
      attempt: '1',
      run: wake.run,
      stateDir: stateDir(),
      file: join(stateDir(), 'current.json'),
      present: true,
      mode: '600',
      task: {
        id: 't1',
        queue: 'default',
        payload: { ask: 'fix the bug' },
        attempt: 1,
        attempts: 3,
        createdAt: 1,
        run: wake.run,
      },
    });

    const completed = cx.hub.nextEvent('task:complete');
    const done = await cx.cli.run(['done', '--result', '-'], localEnv(), '{"fixed": true}\n');
    expect(done).toEqual({ code: LOCAL_EXIT_CODES.OK, stdout: 'task t1: done\n', stderr: '' });
    expect((await completed).message).toEqual({
      taskId: 't1',
      token: 'tok-t1',
      result: { fixed: true },
    });
    expect(existsSync(join(stateDir(), 'current.json'))).toBe(false);
    await stopSidecar(sidecar);
  });

  it('completes with null without --result, and reads --result FILE', async () => {
    await startSidecar();
    await assignAndWake('t1');
    let completed = cx.hub.nextEvent('task:complete');
    expect((await cx.cli.run(['done'], localEnv())).code).toBe(LOCAL_EXIT_CODES.OK);
    expect((await completed).message.result).toBeNull();

    await assignAndWake('t2');
    await writeFile(join(cx.work, 'result.json'), '[1, "two"]');
    completed = cx.hub.nextEvent('task:complete');
    const done = await cx.cli.run(['done', '--result', join(cx.work, 'result.json')], localEnv());
    expect(done.code).toBe(LOCAL_EXIT_CODES.OK);
    expect((await completed).message).toMatchObject({ taskId: 't2', result: [1, 'two'] });
  });

  it('`fail --retry-after 2` reports a rate limit of what is left of 2 s when sent', async () => {
    await startSidecar();
    await assignAndWake('t1');
    const failed = cx.hub.nextEvent('task:fail');
    const before = Date.now();
    const fail = await cx.cli.run(
      ['fail', '--reason', 'model quota', '--retry-after', '2'],
      localEnv(),
    );
    expect(fail).toEqual({ code: LOCAL_EXIT_CODES.OK, stdout: 'task t1: failed\n', stderr: '' });
    const { message } = await failed;
    const receivedAt = Date.now();
    expect(message).toMatchObject({
      taskId: 't1',
      token: 'tok-t1',
      error: 'model quota',
      retryable: true,
      kind: 'error',
    });
    // a duration, not a time on this machine's clock: the hub's may not agree
    expect(message).not.toHaveProperty('rateLimitedUntil');
    expect(message.retryAfterMs).toBeLessThanOrEqual(2000);
    expect(message.retryAfterMs).toBeGreaterThanOrEqual(2000 - (receivedAt - before));
  });

  it('`fail --no-retry` reports a failure that must not be retried', async () => {
    await startSidecar();
    await assignAndWake('t1');
    const failed = cx.hub.nextEvent('task:fail');
    const fail = await cx.cli.run(['fail', '--reason', 'bad input', '--no-retry'], localEnv());
    expect(fail.code).toBe(LOCAL_EXIT_CODES.OK);
    expect((await failed).message).toEqual({
      taskId: 't1',
      token: 'tok-t1',
      error: 'bad input',
      retryable: false,
      kind: 'error',
    });
  });

  it('fails the task when the wake command fails', async () => {
    await startSidecar({ WAKE_EXIT: '4' });
    const failed = cx.hub.nextEvent('task:fail');
    await assignAndWake('t1');
    expect((await failed).message).toEqual({
      taskId: 't1',
      token: 'tok-t1',
      error: 'the wake command failed: exit code 4: the agent would not wake up',
      retryable: true,
      kind: 'error',
    });
    expect(existsSync(join(stateDir(), 'current.json'))).toBe(false);
  });

  it('fails the task as cancelled on task:cancel, removing current.json', async () => {
    await startSidecar();
    await assignAndWake('t1');
    const failed = cx.hub.nextEvent('task:fail');
    const { socket } = await cx.hub.connection();
    socket.emit('task:cancel', { taskId: 't1', reason: 'cancelled' });
    expect((await failed).message).toMatchObject({ kind: 'cancelled', retryable: false });
    expect(existsSync(join(stateDir(), 'current.json'))).toBe(false);
    const done = await cx.cli.run(['done'], localEnv());
    expect(done).toMatchObject({ code: LOCAL_EXIT_CODES.REFUSED });
  });

  describe('when the local command is refused', () => {
    it('exits 1 for done with no task in hand', async () => {
      await startSidecar();
      expect(await cx.cli.run(['done', '--result', '-'], localEnv(), '{}')).toEqual({
        code: LOCAL_EXIT_CODES.REFUSED,
        stdout: '',
        stderr: 'agentcom-sidecar: no task in hand\n',
      });
    });

    it('exits 1 for done --task naming another task, and the task stays in hand', async () => {
      await startSidecar();
      await assignAndWake('t1');
      const done = await cx.cli.run(['done', '--task', 't0'], localEnv());
      expect(done).toEqual({
        code: LOCAL_EXIT_CODES.REFUSED,
        stdout: '',
        stderr: 'agentcom-sidecar: task t0 is not in hand (the task in hand is t1)\n',
      });
      const completed = cx.hub.nextEvent('task:complete');
      expect((await cx.cli.run(['done', '--task', 't1'], localEnv())).code).toBe(0);
      expect((await completed).message.taskId).toBe('t1');
    });

    it('exits 1 for done --run naming an earlier run of the same task (a retry came back here)', async () => {
      await startSidecar();
      const first = await assignAndWake('t1');
      // the hub takes attempt 1 back and gives the task to this agent again; the first run's
      // agent is still at work and reports later
      const { socket } = await cx.hub.connection();
      socket.emit('task:cancel', { taskId: 't1', reason: 'superseded', token: 'tok-t1' });
      const second = await assignAndWake('t1', { token: 'tok-t1-b', attempt: 2 });
      expect(second.run).not.toBe(first.run);
      const late = await cx.cli.run(
        ['done', '--task', 't1', '--run', String(first.run)],
        localEnv(),
      );
      expect(late).toEqual({
        code: LOCAL_EXIT_CODES.REFUSED,
        stdout: '',
        stderr: `agentcom-sidecar: run ${String(first.run)} is not in hand: the task in hand (t1) is another run of it, or another task\n`,
      });
      const completed = cx.hub.nextEvent('task:complete');
      const done = await cx.cli.run(['done', '--run', String(second.run)], localEnv());
      expect(done.code).toBe(LOCAL_EXIT_CODES.OK);
      expect((await completed).message).toMatchObject({ taskId: 't1', token: 'tok-t1-b' });
    });

    it('exits 2 for a result that is not JSON, and the task stays in hand', async () => {
      await startSidecar();
      await assignAndWake('t1');
      const done = await cx.cli.run(['done', '--result', '-'], localEnv(), '{"fixed": tru');
      expect(done.code).toBe(LOCAL_EXIT_CODES.USAGE);
      expect(done.stderr).toMatch(/^agentcom-sidecar: --result: stdin is not valid JSON \(.*\)\n$/);
      const status = await cx.cli.run(['status', '--json'], localEnv());
      expect(JSON.parse(status.stdout)).toMatchObject({ task: { id: 't1' } });
    });

    it.each<[string, string[]]>([
      ['fail without --reason', ['fail']],
      ['a negative --retry-after', ['fail', '--reason', 'x', '--retry-after', '-1']],
      [
        '--retry-after with --no-retry',
        ['fail', '--reason', 'x', '--retry-after', '1', '--no-retry'],
      ],
      ['a missing result file', ['done', '--result', '/no/such/file.json']],
    ])('exits 2 for %s', async (_case, args) => {
      await startSidecar();
      const run = await cx.cli.run(args, localEnv());
      expect(run.code).toBe(LOCAL_EXIT_CODES.USAGE);
      expect(run.stderr).toMatch(/^agentcom-sidecar: .+\n$/);
    });

    it('exits 3 when the sidecar is not running', async () => {
      for (const args of [['status'], ['done'], ['fail', '--reason', 'x']]) {
        const run = await cx.cli.run(args, localEnv());
        expect(run.code).toBe(LOCAL_EXIT_CODES.NOT_RUNNING);
        expect(run.stderr).toBe(
          `agentcom-sidecar: the sidecar is not running (no one listens on ${join(stateDir(), 'sidecar.sock')})\n`,
        );
      }
    });

    it('exits 1 for done / fail in exec mode: "not in wake mode"', async () => {
      await startSidecar({ AGENTCOM_WAKE: '', AGENTCOM_EXEC: `'${process.execPath}' -v` });
      const done = await cx.cli.run(['done'], localEnv());
      expect(done.code).toBe(LOCAL_EXIT_CODES.REFUSED);
      expect(done.stderr).toMatch(/^agentcom-sidecar: not in wake mode/);
      const fail = await cx.cli.run(['fail', '--reason', 'x'], localEnv());
      expect(fail.code).toBe(LOCAL_EXIT_CODES.REFUSED);
    });
  });
});

describe('agentcom-sidecar status', () => {
  it('prints one JSON object naming the task in hand', async () => {
    cx.hub.respond = ({ event }) =>
      event === 'agent:heartbeat' ? { ok: true, state: 'working', hubId: 'hub-7' } : undefined;
    const sidecar = await startSidecar({ AGENTCOM_HEARTBEAT_MS: '200' });
    await assignAndWake('t1');
    await cx.hub.nextEvent('agent:heartbeat');

    const status = await cx.cli.run(['status', '--json'], localEnv());
    expect(status.code).toBe(LOCAL_EXIT_CODES.OK);
    expect(status.stdout.trim().split('\n')).toHaveLength(1);
    const parsed = sidecarStatusSchema.parse(JSON.parse(status.stdout));
    expect(parsed).toMatchObject({
      agentId: 'sleeper',
      mode: 'wake',
      connection: 'connected',
      hubUrl: cx.hub.url,
      hubReplica: 'hub-7',
      agentState: 'working',
      task: { id: 't1', attempt: 1 },
      outbox: 0,
      draining: false,
      pid: sidecar.child.pid,
      stateDir: stateDir(),
    });
    expect(parsed.task?.ageSec).toBeGreaterThanOrEqual(0);
    expect(parsed.uptimeSec).toBeGreaterThanOrEqual(0);
  });

  it('prints readable lines, in exec mode too', async () => {
    const sidecar = await startSidecar({
      AGENTCOM_WAKE: '',
      AGENTCOM_EXEC: `'${process.execPath}' -v`,
    });
    const status = await cx.cli.run(['status'], localEnv());
    expect(status.code).toBe(LOCAL_EXIT_CODES.OK);
    expect(status.stdout).toMatch(/^agent +sleeper \(exec mode\)$/m);
    expect(status.stdout).toMatch(
      /^connection +connected to http:\/\/127\.0\.0\.1:\d+ for \d+ s$/m,
    );
    expect(status.stdout).toMatch(/^task +none$/m);
    expect(status.stdout).toMatch(/^outbox +0 reports waiting for the hub$/m);
    expect(status.stdout).toMatch(new RegExp(`^sidecar +pid ${sidecar.child.pid}, up \\d+ s`, 'm'));
  });
});

describe('agentcom-sidecar run', () => {
  it('creates its IPC socket owner-only in an owner-only state dir', async () => {
    await startSidecar();
    const socket = await stat(join(stateDir(), 'sidecar.sock'));
    expect(socket.isSocket()).toBe(true);
    expect(socket.mode & 0o777).toBe(0o600);
    expect((await stat(stateDir())).mode & 0o777).toBe(0o700);
  });

  it('takes every option from a config file', async () => {
    await writeFile(join(cx.work, 'token'), 'agent-secret\n', { mode: 0o600 });
    await writeFile(
      join(cx.work, 'sidecar.json'),
      JSON.stringify({
        hub: [cx.hub.url],
        agent: 'configured',
        tokenFile: 'token',
        queues: ['default', 'gpu'],
        wake: [process.execPath, join(cx.dir, 'wake.js')],
        stateDir: 'state',
      }),
    );
    const connected = cx.hub.connection({ fresh: true });
    const sidecar = cx.cli.start(['run', '--config', join(cx.work, 'sidecar.json')], {
      HOME: cx.work,
    });
    const { auth } = await connected;
    expect(auth).toMatchObject({ agentId: 'configured', queues: ['default', 'gpu'] });
    const status = await cx.cli.run(
      ['status', '--json', '--config', join(cx.work, 'sidecar.json')],
      {
        HOME: cx.work,
      },
    );
    expect(JSON.parse(status.stdout)).toMatchObject({ agentId: 'configured', mode: 'wake' });
    await stopSidecar(sidecar);
  });

  it('exits 2 on an unknown key in its config file', async () => {
    await writeFile(join(cx.work, 'sidecar.json'), '{"hub": "http://x", "qeues": ["a"]}');
    const run = await cx.cli.run(['run', '--config', join(cx.work, 'sidecar.json')], {
      HOME: cx.work,
    });
    expect(run).toEqual({
      code: EXIT_CODES.BAD_CONFIG,
      stdout: '',
      stderr: `agentcom-sidecar: --config (${join(cx.work, 'sidecar.json')}): unknown key "qeues"\n`,
    });
  });

  it('exits 2 on a token file other users may read', async () => {
    const tokenFile = join(cx.work, 'token');
    await writeFile(tokenFile, 'agent-secret\n');
    await chmod(tokenFile, 0o644);
    const run = await cx.cli.run(
      ['run', '--token-file', tokenFile],
      sidecarEnv({ AGENTCOM_TOKEN: '' }),
    );
    expect(run.code).toBe(EXIT_CODES.BAD_CONFIG);
    expect(run.stderr).toBe(
      `agentcom-sidecar: --token-file (AGENTCOM_TOKEN_FILE): ${tokenFile} is readable or writable ` +
        `by group or others (mode 0644); make it owner-only: chmod 600 ${tokenFile}\n`,
    );
  });

  it('writes its logs to --log-file, not stderr', async () => {
    const logFile = join(cx.work, 'logs', 'sidecar.log');
    const sidecar = await startSidecar({ AGENTCOM_LOG_FILE: logFile });
    await stopSidecar(sidecar);
    expect(sidecar.stderr()).toBe('');
    const entries = (await readFile(logFile, 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(entries).toContainEqual(expect.objectContaining({ msg: 'connected to the hub' }));
    expect((await stat(logFile)).mode & 0o777).toBe(0o600);
  });
});

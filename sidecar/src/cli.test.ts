import { chmod, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EXIT_CODES } from './exit-codes';
import { INTERRUPTED_ERROR } from './outbox/outbox';
import type { CliRun } from './test-support/cli-process';
import { assignment, useCliFixture } from './test-support/cli-fixture';
import { isProcessGone, waitUntil } from './test-support/process';
import { StallingHub } from './test-support/stalling-hub';
import { SIDECAR_VERSION } from './version';

/**
 * The CLI as users run it: the esbuild bundle (the same build script as `npm run bundle`), started
 * as a real process against the scripted hub.
 */

/** A handler that prints its pid, then waits for `<dir>/release` and prints a result. */
const HANDLER = `
  const fs = require('node:fs');
  console.log('pid ' + process.pid);
  const timer = setInterval(() => {
    if (!fs.existsSync(process.env.RELEASE)) return;
    clearInterval(timer);
    console.log(JSON.stringify({ ok: true }));
  }, 10);
`;

const cx = useCliFixture({ 'handler.js': HANDLER });

function runCli(args: string[], env: Record<string, string> = {}): CliRun {
  return cx.cli.start(args, { HOME: cx.work, ...env });
}

function sidecarEnv(stateDir = join(cx.work, 'state')): Record<string, string> {
  return {
    AGENTCOM_HUB: cx.hub.url,
    AGENTCOM_AGENT: 'cli-agent',
    AGENTCOM_TOKEN: 'cli-secret-token',
    AGENTCOM_QUEUES: 'default',
    AGENTCOM_EXEC: `'${process.execPath}' '${join(cx.dir, 'handler.js')}'`,
    AGENTCOM_STATE_DIR: stateDir,
    AGENTCOM_KILL_GRACE_MS: '300',
    RELEASE: join(cx.work, 'release'),
  };
}

/** The JSON log lines the sidecar wrote to stderr so far. */
function logEntries(run: CliRun): Array<Record<string, unknown>> {
  return run
    .stderr()
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Assigns a task to the connected sidecar and resolves with its handler's pid once it runs. */
async function assignAndWait(taskId: string): Promise<number> {
  const { socket } = await cx.hub.connection();
  const log = cx.hub.nextEvent('task:log', (message) =>
    JSON.stringify(message.lines).includes('pid '),
  );
  socket.emit('task:assign', assignment(taskId));
  const lines = (await log).message.lines as string[];
  return Number(lines.find((line) => line.startsWith('pid '))?.slice(4));
}

describe('agentcom-sidecar (bundled CLI)', () => {
  it('prints its version', async () => {
    const run = runCli(['version']);
    expect(await run.exited).toEqual({ code: 0, signal: null });
    expect(run.stdout()).toBe(`${SIDECAR_VERSION}\n`);
  });

  it('is packaged as its bundles alone, with no runtime dependency', async () => {
    const pkg = JSON.parse(await readFile(join(__dirname, '..', 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
      files: string[];
      dependencies?: Record<string, string>;
    };
    expect(pkg.bin['agentcom-sidecar']).toBe('dist/cli.js');
    for (const target of Object.values(pkg.bin)) expect(pkg.files).toContain(target);
    for (const file of pkg.files) expect(file).toMatch(/^dist\/[\w.-]+\.js$/);
    expect(pkg.dependencies).toBeUndefined();
  });

  it('has the version of its package.json', async () => {
    const pkg = JSON.parse(await readFile(join(__dirname, '..', 'package.json'), 'utf8')) as {
      version: string;
    };
    expect(SIDECAR_VERSION).toBe(pkg.version);
  });

  describe('with bad options', () => {
    it.each<[string, string[], Record<string, string>, string]>([
      [
        'a missing hub',
        ['run'],
        { AGENTCOM_HUB: '' },
        'agentcom-sidecar: --hub (AGENTCOM_HUB): is required\n',
      ],
      [
        'an unknown flag',
        ['run', '--hubb', 'x'],
        {},
        "agentcom-sidecar: unknown option '--hubb' (Did you mean --hub?)\n",
      ],
      [
        'a bad heartbeat from the environment',
        ['run'],
        { AGENTCOM_HEARTBEAT_MS: 'often' },
        'agentcom-sidecar: --heartbeat-ms (AGENTCOM_HEARTBEAT_MS): must be a whole number\n',
      ],
    ])('exits 2 with one line naming the option, for %s', async (_case, args, env, line) => {
      const run = runCli(args, { ...sidecarEnv(), ...env });
      expect(await run.exited).toEqual({ code: EXIT_CODES.BAD_CONFIG, signal: null });
      expect(run.stderr()).toBe(line);
    });

    // `/proc` answers ENOENT to a mkdir under it although the parent exists: Node's recursive
    // mkdir then retries forever at full CPU. Every unopenable log file must end the run at once.
    it.each<[string, () => Promise<{ path: string; code: string }>]>([
      [
        'a directory under /proc',
        () => Promise.resolve({ path: '/proc/agentcom-test/logs/sidecar.log', code: 'ENOENT' }),
      ],
      ['a directory', () => Promise.resolve({ path: cx.work, code: 'EISDIR' })],
      [
        'a path under a regular file',
        async () => {
          await writeFile(join(cx.work, 'plain'), '');
          return { path: join(cx.work, 'plain', 'logs', 'sidecar.log'), code: 'ENOTDIR' };
        },
      ],
      [
        'a path under a dangling symlink',
        async () => {
          await symlink(join(cx.work, 'missing'), join(cx.work, 'dangling'));
          return { path: join(cx.work, 'dangling', 'logs', 'sidecar.log'), code: 'ENOENT' };
        },
      ],
    ])('exits 2 at once naming the log file, for %s', async (_case, setUp) => {
      const { path, code } = await setUp();
      const run = runCli(['run', '--log-file', path], sidecarEnv());
      let deadline: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        run.exited,
        new Promise<'still running'>((resolve) => {
          deadline = setTimeout(() => resolve('still running'), 5000);
        }),
      ]);
      clearTimeout(deadline);
      expect(outcome).toEqual({ code: EXIT_CODES.BAD_CONFIG, signal: null });
      expect(run.stderr()).toBe(
        `agentcom-sidecar: --log-file (AGENTCOM_LOG_FILE): cannot open ${path} (${code})\n`,
      );
    });

    // root reads any file: drop the capabilities that let it, so it meets a mode as others do
    const asOwnerOnly =
      process.getuid?.() === 0
        ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--']
        : [];

    it.each<[string, (stateDir: string) => Promise<string>]>([
      [
        'state.json is a directory',
        async (stateDir) => {
          await mkdir(join(stateDir, 'state.json', 'x'), { recursive: true });
          return (
            `${join(stateDir, 'state.json')} is a directory, not the state file: move it out of ` +
            'the way (the sidecar creates the file)'
          );
        },
      ],
      [
        'state.json is unreadable',
        async (stateDir) => {
          const path = join(stateDir, 'state.json');
          await writeFile(path, '{"version":1,"outbox":[]}\n', { mode: 0o600 });
          await chmod(path, 0o000);
          return (
            `the sidecar's user (uid ${process.getuid?.() ?? '?'}) may not read or write ${path} ` +
            '(EACCES): give it to that user (chown, chmod 600 for a file, 700 for a directory), ' +
            'or choose another --state-dir'
          );
        },
      ],
      [
        'the state dir is a file',
        async (stateDir) => {
          await rm(stateDir, { recursive: true, force: true });
          await writeFile(stateDir, '');
          return (
            `${stateDir} is not a usable directory for the state dir (EEXIST): a file is in the ` +
            'way; move it, or choose another --state-dir'
          );
        },
      ],
    ])('exits 2 with one line naming the path when %s', async (_case, setUp) => {
      const stateDir = join(cx.work, 'state');
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
      const line = await setUp(stateDir);
      const run = cx.cli.start(
        ['run'],
        { HOME: cx.work, ...sidecarEnv(stateDir) },
        undefined,
        asOwnerOnly,
      );
      expect(await run.exited).toEqual({ code: EXIT_CODES.BAD_CONFIG, signal: null });
      expect(run.stderr()).toBe(`agentcom-sidecar: --state-dir (AGENTCOM_STATE_DIR): ${line}\n`);
    });

    it('exits 2 with one line, leaving the file as it is, when a newer sidecar wrote state.json', async () => {
      const stateDir = join(cx.work, 'state');
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
      const path = join(stateDir, 'state.json');
      const bytes = Buffer.from(
        '{"version":2,"current":{"taskId":"t1","token":"k1","attempt":1,"state":"working"},' +
          '"outbox":[{"type":"complete","taskId":"t0","token":"k0","result":1}]}\n',
      );
      await writeFile(path, bytes, { mode: 0o600 });
      const run = runCli(['run'], sidecarEnv(stateDir));
      // A sidecar that started anyway would connect: that ends the wait too, and fails the test.
      const outcome = await Promise.race([
        run.exited,
        cx.hub.connection().then(() => 'connected to the hub'),
      ]);
      expect(outcome).toEqual({ code: EXIT_CODES.BAD_CONFIG, signal: null });
      expect(run.stderr()).toBe(
        `agentcom-sidecar: --state-dir (AGENTCOM_STATE_DIR): ${path} was written by a newer ` +
          `sidecar (state file version 2; this sidecar, ${SIDECAR_VERSION}, reads version 1) and ` +
          'may hold undelivered results: upgrade the sidecar back to a version that reads it, or ' +
          'move the file aside to start empty (losing the task and reports it holds)\n',
      );
      expect((await readFile(path)).equals(bytes)).toBe(true);
      expect(await readdir(stateDir)).toEqual(['state.json']);
    });

    it('exits 2 when another sidecar holds the state dir', async () => {
      const first = runCli(['run'], sidecarEnv());
      await cx.hub.connection();
      const second = runCli(['run'], sidecarEnv());
      expect(await second.exited).toEqual({ code: EXIT_CODES.BAD_CONFIG, signal: null });
      expect(second.stderr()).toMatch(
        /^agentcom-sidecar: --state-dir \(AGENTCOM_STATE_DIR\): the state dir is in use by process \d+/,
      );
      first.child.kill('SIGTERM');
      expect(await first.exited).toEqual({ code: 0, signal: null });
    });
  });

  describe('when a hub holds the handshake', () => {
    // Well short of the 20 s default timeout: only the configured one gets the sidecar there.
    const TEST_TIMEOUT_MS = 10_000;
    let stuck: StallingHub;

    beforeEach(async () => {
      stuck = new StallingHub();
      await stuck.start();
    });
    afterEach(async () => {
      await stuck.stop();
    });

    it(
      'moves on to the next hub URL after --handshake-timeout-ms',
      async () => {
        const run = runCli(['run', '--handshake-timeout-ms', '300', '--failover-attempts', '1'], {
          ...sidecarEnv(),
          AGENTCOM_HUB: `${stuck.url},${cx.hub.url}`,
        });
        await cx.hub.connection();
        expect(stuck.handshakes).toBe(1);
        const why = 'no handshake within 300 ms';
        await waitUntil(() => run.stderr().includes(why), 'the failover is logged', 2000);
        expect(logEntries(run)).toContainEqual(
          expect.objectContaining({ url: stuck.url, err: why }),
        );
      },
      TEST_TIMEOUT_MS,
    );
  });

  describe('when the hub refuses or replaces it', () => {
    it('exits 3 on E_UNAUTHORIZED, logging why but never the token', async () => {
      cx.hub.refuseWith = 'E_UNAUTHORIZED';
      const run = runCli(['run', '--log-level', 'debug'], sidecarEnv());
      expect(await run.exited).toEqual({ code: EXIT_CODES.REFUSED, signal: null });
      expect(logEntries(run)).toContainEqual(
        expect.objectContaining({ agentId: 'cli-agent', code: 'E_UNAUTHORIZED' }),
      );
      expect(run.stderr()).not.toContain('cli-secret-token');
    });

    it('exits 4 on E_REPLACED', async () => {
      const run = runCli(['run'], sidecarEnv());
      const { socket } = await cx.hub.connection();
      socket.emit('hub:error', { code: 'E_REPLACED', message: 'another connection' });
      expect(await run.exited).toEqual({ code: EXIT_CODES.REPLACED, signal: null });
    });
  });

  describe('on signals', () => {
    it('drains on SIGTERM: the task finishes, its report is delivered, exit 0', async () => {
      const run = runCli(['run'], sidecarEnv());
      await assignAndWait('t1');
      const drain = cx.hub.nextEvent('agent:drain');
      run.child.kill('SIGTERM');
      await drain;
      const completed = cx.hub.nextEvent('task:complete');
      await writeFile(join(cx.work, 'release'), '');
      expect((await completed).message).toEqual({
        taskId: 't1',
        token: 'tok-t1',
        result: { ok: true },
      });
      expect(await run.exited).toEqual({ code: EXIT_CODES.OK, signal: null });
    });

    it('exits 130 at once on a second signal, killing the task process', async () => {
      const run = runCli(['run'], sidecarEnv());
      const pid = await assignAndWait('t1');
      const drain = cx.hub.nextEvent('agent:drain');
      run.child.kill('SIGINT');
      await drain;
      run.child.kill('SIGINT');
      expect(await run.exited).toEqual({ code: EXIT_CODES.SECOND_SIGNAL, signal: null });
      await waitUntil(() => isProcessGone(pid), 'the task process is gone', 2000);
    });
  });

  describe('when the sidecar process is killed mid-task', () => {
    it('reports the task as interrupted after a restart', async () => {
      const first = runCli(['run'], sidecarEnv());
      const pid = await assignAndWait('t1');
      first.child.kill('SIGKILL');
      await first.exited;
      process.kill(-pid, 'SIGKILL'); // the task's group outlives a SIGKILLed sidecar: end it here

      const failed = cx.hub.nextEvent('task:fail');
      const reconnected = cx.hub.connection({ fresh: true });
      runCli(['run'], sidecarEnv());
      expect((await reconnected).auth.current).toEqual({
        taskId: 't1',
        token: 'tok-t1',
        state: 'finished',
      });
      expect((await failed).message).toEqual({
        taskId: 't1',
        token: 'tok-t1',
        error: INTERRUPTED_ERROR,
        retryable: true,
        kind: 'error',
      });
    });
  });
});

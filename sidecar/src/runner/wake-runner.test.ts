import childProcess, { type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskAssign } from '@agentcom/shared';
import type { Logger } from '../logger';
import { LineRecorder } from '../test-support/line-recorder';
import { recordingLogger, testLogger } from '../test-support/logger';
import { nodeScriptOptions } from '../test-support/node-script';
import { isProcessGone, waitUntil } from '../test-support/process';
import { makeTempDir } from '../test-support/temp-dir';
import { MAX_OUTPUT_LINE_BYTES } from './task-output';
import type { RunningTask } from './task-runner';
import { TASK_FILE_NAME, WakeRunner } from './wake-runner';

let dir: string;
let cleanup: () => Promise<void>;
const leftovers: number[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterEach(async () => {
  jest.restoreAllMocks();
  for (const pid of leftovers.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await cleanup();
});

function assignment(overrides: Partial<TaskAssign> = {}): TaskAssign {
  return {
    task: {
      id: 'task-1',
      queue: 'default',
      payload: { n: 41 },
      labels: { repo: 'x' },
      createdAt: 1_700_000_000_000,
    },
    token: 'tok-secret',
    attempt: 2,
    attempts: 3,
    ...overrides,
  };
}

/** A wake command of `node -e <script>`: a real child process per task. */
function wakeRunner(script: string, killGraceMs?: number, logger?: Logger): WakeRunner {
  return new WakeRunner({ ...nodeScriptOptions(script, killGraceMs, logger), stateDir: dir });
}

/** Prints what it saw (env, the task file and its mode) as one line, then exits 0. */
const RECORD_AND_EXIT = `
  const fs = require('node:fs');
  const file = process.env.AGENTCOM_TASK_FILE;
  console.log('woke ' + JSON.stringify({
    env: {
      id: process.env.AGENTCOM_TASK_ID,
      file,
      attempt: process.env.AGENTCOM_ATTEMPT,
      run: process.env.AGENTCOM_RUN_ID,
      stateDir: process.env.AGENTCOM_STATE_DIR,
      token: process.env.AGENTCOM_TASK_TOKEN ?? null,
    },
    task: JSON.parse(fs.readFileSync(file, 'utf8')),
    mode: (fs.statSync(file).mode & 0o777).toString(8),
  }));
`;

/** Prints its pid, then runs until killed. */
const STAY_UP = `console.log('pid ' + process.pid); setInterval(() => {}, 1000);`;

async function pidOf(sink: LineRecorder): Promise<number> {
  const pid = Number((await sink.next(/^pid /)).slice(4));
  leftovers.push(pid);
  return pid;
}

describe('WakeRunner', () => {
  describe('when a task starts', () => {
    it('writes current.json owner-only without the token, and wakes the agent with its env', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment({ timeoutMs: 60_000 }), sink);

      const seen = JSON.parse((await sink.next(/^woke /)).slice(5)) as Record<string, unknown>;
      const runId = runner.inHand()?.runId;
      expect(runId).toMatch(/^[0-9a-f]{16}$/);
      expect(seen).toEqual({
        env: {
          id: 'task-1',
          file: join(dir, TASK_FILE_NAME),
          attempt: '2',
          run: runId,
          stateDir: dir,
          token: null,
        },
        task: {
          id: 'task-1',
          queue: 'default',
          payload: { n: 41 },
          labels: { repo: 'x' },
          attempt: 2,
          attempts: 3,
          timeoutMs: 60_000,
          createdAt: 1_700_000_000_000,
          run: runId,
        },
        mode: '600',
      });
      run.stop('cancelled');
      await run.outcome;
    });

    it('holds the task after the wake command exits 0, until the agent reports', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment(), sink);
      await sink.next(/^woke /);
      await waitUntil(() => runner.inHand() !== undefined, 'the task is in hand');
      expect(runner.inHand()).toMatchObject({ taskId: 'task-1', attempt: 2 });
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(true);

      expect(runner.report({ type: 'complete', result: { answer: 42 } })).toEqual({
        ok: true,
        taskId: 'task-1',
      });
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: { answer: 42 } });
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(false);
      expect(runner.inHand()).toBeUndefined();
    });

    it('cuts a line without a newline to the log line limit', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(`process.stdout.write('y'.repeat(5 * 1024 * 1024));`);
      const run = runner.start(assignment(), sink);
      const line = await sink.next(/…$/);
      expect(line).toBe(`${'y'.repeat(MAX_OUTPUT_LINE_BYTES - 3)}…`);
      runner.report({ type: 'complete', result: null });
      await run.outcome;
      expect(sink.lines).toEqual([line]);
    });

    it('passes a rate-limited failure through', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment(), sink);
      await sink.next(/^woke /);
      runner.report({
        type: 'fail',
        reason: 'quota',
        retryable: true,
        rateLimitedUntil: 1_800_000_000_000,
      });
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'quota',
        retryable: true,
        kind: 'error',
        rateLimitedUntil: 1_800_000_000_000,
      });
    });
  });

  describe('when the agent reports', () => {
    it('refuses a report when no task is in hand', () => {
      const runner = wakeRunner(RECORD_AND_EXIT);
      expect(runner.report({ type: 'complete', result: null })).toEqual({
        ok: false,
        code: 'E_NO_TASK',
        message: 'no task in hand',
      });
    });

    it('refuses a report naming another task, and takes one naming the task in hand', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment(), sink);
      await sink.next(/^woke /);
      expect(runner.report({ type: 'complete', result: 1 }, 'task-0')).toMatchObject({
        ok: false,
        code: 'E_OTHER_TASK',
      });
      expect(runner.report({ type: 'complete', result: 2 }, 'task-1')).toEqual({
        ok: true,
        taskId: 'task-1',
      });
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: 2 });
      expect(runner.report({ type: 'complete', result: 3 })).toMatchObject({ code: 'E_NO_TASK' });
    });

    it('does not wake an agent for a task the report ended while current.json was written', async () => {
      const { logger, entries } = recordingLogger();
      const marker = join(dir, 'woken');
      const runner = wakeRunner(
        `require('fs').writeFileSync(${JSON.stringify(marker)}, process.env.AGENTCOM_TASK_ID)`,
        5000,
        logger,
      );
      const run = runner.start(assignment(), new LineRecorder());
      expect(runner.report({ type: 'complete', result: 1 })).toEqual({
        ok: true,
        taskId: 'task-1',
      });
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: 1 });
      // A wake command started after the write is announced before the outcome: the file's
      // removal, which the outcome waits for, comes after the start in the event loop.
      expect(entries().map((entry) => entry.msg)).not.toContain('wake command started');
      expect(existsSync(marker)).toBe(false);
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(false);
    });

    it('leaves a wake command still running alone: it may be the agent itself', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(STAY_UP);
      const run = runner.start(assignment(), sink);
      const pid = await pidOf(sink);
      runner.report({ type: 'complete', result: 'ok' });
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: 'ok' });
      expect(isProcessGone(pid)).toBe(false);
    });
  });

  describe('when the wake command fails', () => {
    it('fails the task, retryable, naming the exit code and the stderr tail', async () => {
      const runner = wakeRunner(`console.error('cannot reach the agent'); process.exit(3);`);
      const run = runner.start(assignment(), new LineRecorder());
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'the wake command failed: exit code 3: cannot reach the agent',
        retryable: true,
        kind: 'error',
      });
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(false);
    });

    it('fails the task when the wake command cannot start', async () => {
      const runner = new WakeRunner({
        argv: [join(dir, 'no-such-command')],
        env: {},
        stateDir: dir,
        killGraceMs: 100,
        logger: testLogger(),
      });
      const outcome = await runner.start(assignment(), new LineRecorder()).outcome;
      expect(outcome).toMatchObject({ type: 'fail', retryable: true, kind: 'error' });
      expect(outcome.type === 'fail' && outcome.error).toMatch(/could not start .*ENOENT/);
    });
  });

  describe('when the task is stopped', () => {
    it('fails it as timeout after timeoutMs and removes current.json', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment({ timeoutMs: 300 }), sink);
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'timed out after 300 ms (timeoutMs)',
        retryable: true,
        kind: 'timeout',
      });
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(false);
    });

    it('fails it as cancelled on cancel, not retryable', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment(), sink);
      await sink.next(/^woke /);
      run.stop('cancelled');
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'cancelled by the hub',
        retryable: false,
        kind: 'cancelled',
      });
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(false);
      expect(runner.report({ type: 'complete', result: null })).toMatchObject({
        code: 'E_NO_TASK',
      });
    });

    it('drops it when the lease is lost', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(RECORD_AND_EXIT);
      const run = runner.start(assignment(), sink);
      await sink.next(/^woke /);
      run.stop('lease_lost');
      await expect(run.outcome).resolves.toEqual({ type: 'dropped', reason: 'lease_lost' });
    });

    it('terminates a wake command still running', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(STAY_UP, 200);
      const run = runner.start(assignment(), sink);
      const pid = await pidOf(sink);
      run.stop('cancelled');
      await expect(run.outcome).resolves.toMatchObject({ kind: 'cancelled' });
      await waitUntil(() => isProcessGone(pid), 'the wake command is gone', 2000);
    });

    /**
     * Runs `during` in the tick that spawns the wake command, with the real spawn: `before` the
     * spawn() call (the runner decided to wake the agent, and nothing of its own looks at the task
     * again before the call), or `after` it, once the runner's code of that turn ran (the
     * process exists and leads its group, its `spawn` event has not come yet: Node emits it from
     * a nextTick, which comes after the microtasks). Resolves with the wake command's pid.
     */
    function inSpawnTick(when: 'before' | 'after', during: () => void): Promise<number> {
      const realSpawn = childProcess.spawn as (...args: unknown[]) => ChildProcess;
      return new Promise<number>((resolve, reject) => {
        jest.spyOn(childProcess, 'spawn').mockImplementationOnce(((...args: unknown[]) => {
          if (when === 'before') during();
          const child = realSpawn.apply(childProcess, args);
          const pid = child.pid;
          if (pid === undefined) {
            reject(new Error('the wake command did not start'));
            return child;
          }
          leftovers.push(pid);
          if (when === 'before') {
            resolve(pid);
            return child;
          }
          let announced = false;
          child.once('spawn', () => (announced = true));
          queueMicrotask(() => {
            if (announced) {
              reject(new Error('the spawn event came before the microtask'));
              return;
            }
            during();
            resolve(pid);
          });
          return child;
        }) as typeof childProcess.spawn);
      });
    }

    /** Starts a task on `runner` and lands `stop` in its spawn tick (see {@link inSpawnTick}). */
    async function startStoppedInSpawnTick(
      runner: WakeRunner,
      when: 'before' | 'after',
      stop: (run: RunningTask) => void,
      sink = new LineRecorder(),
    ): Promise<{ run: RunningTask; pid: number }> {
      let run: RunningTask | undefined;
      const spawned = inSpawnTick(when, () => run && stop(run));
      run = runner.start(assignment(), sink);
      return { run, pid: await spawned };
    }

    it('terminates a wake command started for a task cancelled just before its spawn', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(STAY_UP, 60_000);
      const { run, pid } = await startStoppedInSpawnTick(
        runner,
        'before',
        (started) => started.stop('cancelled'),
        sink,
      );
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'cancelled by the hub',
        retryable: false,
        kind: 'cancelled',
      });
      expect(existsSync(join(dir, TASK_FILE_NAME))).toBe(false);
      // it wakes an agent for a task that is over: it is not left running
      await waitUntil(() => isProcessGone(pid), 'the wake command is gone', 5000);
      expect(sink.lines).toEqual([]);
    });

    it('kills the wake command at once on a killNow (the sidecar exiting) in its spawn tick', async () => {
      const { logger, entries } = recordingLogger();
      const runner = wakeRunner(STAY_UP, 60_000, logger);
      const { run, pid } = await startStoppedInSpawnTick(runner, 'after', (started) =>
        started.killNow(),
      );
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'the sidecar shut down before the task finished',
        retryable: true,
        kind: 'error',
      });
      // killed by killNow itself (the process exits right after it: nothing later would kill it),
      // not by a SIGTERM once its start was announced
      const ended = () => entries().find((entry) => entry.msg === 'wake command ended');
      await waitUntil(() => ended() !== undefined, 'the wake command ended', 5000);
      expect(ended()).toMatchObject({ code: null, signal: 'SIGKILL' });
      expect(isProcessGone(pid)).toBe(true);
    });

    it('settles a task stopped in its spawn tick only once the wake command is gone', async () => {
      const runner = wakeRunner(STAY_UP, 60_000);
      const { run, pid } = await startStoppedInSpawnTick(runner, 'after', (started) =>
        started.stop('shutdown'),
      );
      const goneAtOutcome = run.outcome.then((outcome) => ({ outcome, gone: isProcessGone(pid) }));
      await expect(goneAtOutcome).resolves.toEqual({
        outcome: {
          type: 'fail',
          error: 'the sidecar shut down before the task finished',
          retryable: true,
          kind: 'error',
        },
        gone: true,
      });
    });

    it('refuses a report that comes while a stopped wake command is given its grace: the stop decided', async () => {
      const sink = new LineRecorder();
      const runner = wakeRunner(
        `process.on('SIGTERM', () => console.log('ignoring SIGTERM')); ${STAY_UP}`,
        1000,
      );
      const run = runner.start(assignment(), sink);
      await pidOf(sink);
      run.stop('cancelled');
      await sink.next(/^ignoring SIGTERM$/);
      expect(runner.inHand()).toBeUndefined();
      expect(runner.report({ type: 'complete', result: 'too late' })).toMatchObject({
        ok: false,
        code: 'E_NO_TASK',
      });
      await expect(run.outcome).resolves.toMatchObject({ type: 'fail', kind: 'cancelled' });
    });
  });

  it('removes a current.json left by a sidecar that died', async () => {
    await writeFile(join(dir, TASK_FILE_NAME), '{}');
    const runner = wakeRunner(RECORD_AND_EXIT);
    await runner.removeStaleTaskFile();
    await expect(stat(join(dir, TASK_FILE_NAME))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('removes the temporary file of a current.json whose write the death of a sidecar cut', async () => {
    const leftover = `.${TASK_FILE_NAME}.tmp-123-abcd`;
    await writeFile(join(dir, leftover), '{"id":"old","payload":{"secret":');
    await writeFile(join(dir, 'unrelated'), 'kept');
    await wakeRunner(RECORD_AND_EXIT).removeStaleTaskFile();
    expect(await readdir(dir)).toEqual(['unrelated']);
  });
});

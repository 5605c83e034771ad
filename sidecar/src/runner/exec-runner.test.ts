import type { TaskAssign } from '@agentcom/shared';
import type { Logger } from '../logger';
import { LineRecorder } from '../test-support/line-recorder';
import { recordingLogger, testLogger } from '../test-support/logger';
import { nodeScriptOptions } from '../test-support/node-script';
import { isProcessGone, waitUntil } from '../test-support/process';
import { ExecRunner } from './exec-runner';
import { readBootId, readProcStat, type TaskProcess } from './process-identity';
import { MAX_OUTPUT_LINE_BYTES, MAX_STDOUT_LINE_BYTES } from './task-output';

function assignment(overrides: Partial<TaskAssign> = {}): TaskAssign {
  return {
    task: { id: 'task-1', queue: 'default', payload: { n: 41 }, createdAt: Date.now() },
    token: 'tok-abc',
    attempt: 2,
    attempts: 3,
    ...overrides,
  };
}

/** A runner of `node -e <script>`: a real child process per task. */
function nodeRunner(script: string, killGraceMs?: number, logger?: Logger): ExecRunner {
  return new ExecRunner(nodeScriptOptions(script, killGraceMs, logger));
}

const READ_TASK = `
  let input = '';
  process.stdin.on('data', (chunk) => (input += chunk));
  process.stdin.on('end', () => main(JSON.parse(input)));
`;

describe('ExecRunner', () => {
  describe('when the command exits 0', () => {
    it('completes with the last stdout line parsed as JSON, and the task on stdin and in env', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(`${READ_TASK}
        function main(task) {
          console.log('working on ' + task.id);
          console.log(JSON.stringify({
            payload: task.payload,
            id: process.env.AGENTCOM_TASK_ID,
            token: process.env.AGENTCOM_TASK_TOKEN,
            attempt: process.env.AGENTCOM_ATTEMPT,
          }));
        }`).start(assignment(), sink);

      await expect(run.outcome).resolves.toEqual({
        type: 'complete',
        result: { payload: { n: 41 }, id: 'task-1', token: 'tok-abc', attempt: '2' },
      });
    });

    it('turns every stdout line into a log line', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(
        `console.log('one'); console.log(''); console.log('two\\nthree');`,
      ).start(assignment(), sink);
      await run.outcome;
      expect(sink.lines).toEqual(['one', '', 'two', 'three']);
    });

    it('holds at most a bounded part of a line without a newline, cutting it', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(`process.stdout.write('x'.repeat(5 * 1024 * 1024));`).start(
        assignment(),
        sink,
      );
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: null });
      expect(sink.lines).toHaveLength(1);
      const [line = ''] = sink.lines;
      expect(Buffer.byteLength(line)).toBeLessThanOrEqual(MAX_STDOUT_LINE_BYTES);
      expect(line).toMatch(/^x+…$/);
    });

    it('cuts a stderr line to the log line limit, and names it in a failure', async () => {
      const { logger, entries } = recordingLogger();
      const run = nodeRunner(
        `process.stderr.write('e'.repeat(1024 * 1024)); process.exit(4);`,
        5000,
        logger,
      ).start(assignment(), new LineRecorder());
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: `exit code 4: ${'e'.repeat(2000)}…`,
        retryable: true,
        kind: 'error',
      });
      const logged = entries().filter((entry) => entry.msg === 'task stderr');
      expect(logged.map((entry) => entry.line)).toEqual([
        `${'e'.repeat(MAX_OUTPUT_LINE_BYTES - 3)}…`,
      ]);
    });

    it('completes with null when the last line is not JSON', async () => {
      const run = nodeRunner(`console.log('{"partial": 1}'); console.log('all done');`).start(
        assignment(),
        new LineRecorder(),
      );
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: null });
    });

    it('terminates what the command left running in its process group', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(
        `const { spawn } = require('node:child_process');
         const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'inherit' });
         console.log('grandchild ' + child.pid);
         child.unref();
         console.log('{"ok":true}');`,
        200,
      ).start(assignment(), sink);

      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: { ok: true } });
      const grandchild = Number((await sink.next(/^grandchild /)).split(' ')[1]);
      expect(isProcessGone(grandchild)).toBe(true);
    });

    it('takes a last line without a newline as the result when a process outside its group holds stdout', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(
        `const { spawn } = require('node:child_process');
         const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
           stdio: ['ignore', 'inherit', 'ignore'],
           detached: true,
         });
         holder.unref();
         console.log('holder ' + holder.pid);
         console.log('{"step":1}');
         process.stdout.write('{"ok":true}');`,
      ).start(assignment(), sink);
      const holder = Number((await sink.next(/^holder /)).split(' ')[1]);
      try {
        await expect(run.outcome).resolves.toEqual({ type: 'complete', result: { ok: true } });
        expect(sink.lines.at(-1)).toBe('{"ok":true}');
      } finally {
        process.kill(holder, 'SIGKILL');
      }
    });
  });

  describe('while the command runs', () => {
    it('tells the sink which process leads its group: pid, start time and boot', async () => {
      const started: TaskProcess[] = [];
      const sink = new LineRecorder();
      sink.started = (process) => void started.push(process);
      const run = nodeRunner(
        `console.log('pid ' + process.pid); process.stdin.resume(); setInterval(() => {}, 1000);`,
      ).start(assignment(), sink);
      try {
        const pid = Number((await sink.next(/^pid /)).split(' ')[1]);
        const stat = readProcStat(pid);
        expect(stat?.pgrp).toBe(pid);
        expect(started).toEqual([{ pid, startTime: stat?.startTime, bootId: readBootId() }]);
      } finally {
        run.stop('cancelled');
        await run.outcome;
      }
    });

    it('writes the task to the command only once the sink has recorded its process', async () => {
      // `read -t 0` succeeds when input is there: the command says whether it had its task then.
      const runner = new ExecRunner({
        ...nodeScriptOptions(''),
        argv: [
          'bash',
          '-c',
          'if read -t 0; then echo early; else echo waiting; fi; read -r t; echo "got $t"',
        ],
      });
      const sink = new LineRecorder();
      let recorded = false;
      // the state file write: done once the command said whether its task was there
      sink.started = () =>
        sink.next(/^(early|waiting)$/).then(() => {
          recorded = true;
        });
      const run = runner.start(assignment(), sink);
      await expect(run.outcome).resolves.toMatchObject({ type: 'complete' });
      expect(recorded).toBe(true);
      expect(sink.lines).toEqual(['waiting', expect.stringMatching(/^got \{"id":"task-1"/)]);
    });
  });

  describe('when the task cannot be written to the command', () => {
    it('fails, retryable, and starts no process (a payload nested too deep for JSON.stringify)', async () => {
      let deep: unknown = 0;
      for (let i = 0; i < 20_000; i++) deep = [deep];
      const started: TaskProcess[] = [];
      const run = nodeRunner(`setInterval(() => {}, 1000);`, 300).start(
        assignment({ task: { id: 'deep', queue: 'default', payload: deep, createdAt: 1 } }),
        { log: () => undefined, started: (process) => void started.push(process) },
      );
      await expect(run.outcome).resolves.toMatchObject({
        type: 'fail',
        retryable: true,
        error: expect.stringMatching(
          /^the sidecar failed to run the task: .*call stack/,
        ) as unknown,
      });
      expect(started).toEqual([]);
    });
  });

  describe('when the command fails', () => {
    it('fails, retryable, with the exit code and the stderr tail', async () => {
      const run = nodeRunner(
        `console.log('out'); console.error('first problem'); console.error('second problem'); process.exit(3);`,
      ).start(assignment(), new LineRecorder());
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'exit code 3: first problem\nsecond problem',
        retryable: true,
        kind: 'error',
      });
    });

    it('names the signal that killed it', async () => {
      const run = nodeRunner(`process.kill(process.pid, 'SIGKILL');`).start(
        assignment(),
        new LineRecorder(),
      );
      await expect(run.outcome).resolves.toMatchObject({
        type: 'fail',
        error: 'killed by signal SIGKILL',
        retryable: true,
      });
    });

    it('fails, retryable, when the command cannot be started', async () => {
      const runner = new ExecRunner({
        argv: ['/nonexistent/agentcom-handler'],
        env: {},
        killGraceMs: 100,
        logger: testLogger(),
      });
      const outcome = await runner.start(assignment(), new LineRecorder()).outcome;
      expect(outcome).toMatchObject({ type: 'fail', retryable: true, kind: 'error' });
      expect(outcome.type === 'fail' && outcome.error).toMatch(/could not start .*ENOENT/);
    });

    it('refuses a JSON result longer than the stdout line it may be held in', async () => {
      const run = nodeRunner(
        `process.stdout.write(JSON.stringify({ big: 'x'.repeat(3 * 1024 * 1024) }) + '\\n');`,
      ).start(assignment(), { log: () => undefined });
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: `the result (last stdout line) is not acceptable: it is longer than ${MAX_STDOUT_LINE_BYTES} bytes`,
        retryable: false,
        kind: 'error',
      });
    });

    it('refuses a JSON result larger than the protocol allows', async () => {
      const run = nodeRunner(
        `console.log(JSON.stringify({ big: 'x'.repeat(1024 * 1024 + 10) }));`,
      ).start(assignment(), { log: () => undefined });
      await expect(run.outcome).resolves.toMatchObject({ type: 'fail', retryable: false });
    });
  });

  describe('when the task runs past its timeoutMs', () => {
    it('kills the whole process group, even processes that ignore SIGTERM, and fails as timeout', async () => {
      const sink = new LineRecorder();
      const stubborn = `process.on('SIGTERM', () => console.log('ignoring SIGTERM')); setInterval(() => {}, 1000);`;
      const started = Date.now();
      const run = nodeRunner(
        `const { spawn } = require('node:child_process');
         process.on('SIGTERM', () => {});
         const child = spawn(process.execPath, ['-e', ${JSON.stringify(stubborn)}], { stdio: 'inherit' });
         console.log('pids ' + process.pid + ' ' + child.pid);
         setInterval(() => {}, 1000);`,
        300,
      ).start(assignment({ timeoutMs: 1000 }), sink);

      const [leader, grandchild] = (await sink.next(/^pids /)).split(' ').slice(1).map(Number);
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'timed out after 1000 ms (timeoutMs)',
        retryable: true,
        kind: 'timeout',
      });
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000 + 300);
      await waitUntil(() => isProcessGone(leader ?? 0), 'the leader is gone', 2000);
      await waitUntil(() => isProcessGone(grandchild ?? 0), 'the grandchild is gone', 2000);
    });

    it('lets a task run whose timeoutMs is longer than one timer holds (2^31 - 1 ms)', async () => {
      const run = nodeRunner(`console.log('{"ok":true}');`).start(
        assignment({ timeoutMs: 30 * 24 * 60 * 60 * 1000 }),
        new LineRecorder(),
      );
      await expect(run.outcome).resolves.toEqual({ type: 'complete', result: { ok: true } });
    });
  });

  describe('when the hub stops the task', () => {
    const LONG = `console.log('started'); setInterval(() => {}, 1000);`;

    it('fails as cancelled, not retryable, for reason "cancelled"', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(LONG).start(assignment(), sink);
      await sink.next(/^started$/);
      run.stop('cancelled');
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'cancelled by the hub',
        retryable: false,
        kind: 'cancelled',
      });
    });

    it.each(['lease_lost', 'superseded'] as const)(
      'drops the task for reason %s',
      async (reason) => {
        const sink = new LineRecorder();
        const run = nodeRunner(LONG).start(assignment(), sink);
        await sink.next(/^started$/);
        run.stop(reason);
        await expect(run.outcome).resolves.toEqual({ type: 'dropped', reason });
      },
    );

    it('kills at once on killNow', async () => {
      const sink = new LineRecorder();
      const run = nodeRunner(`process.on('SIGTERM', () => {}); ${LONG}`, 60_000).start(
        assignment(),
        sink,
      );
      await sink.next(/^started$/);
      run.killNow();
      await expect(run.outcome).resolves.toMatchObject({ type: 'fail', kind: 'error' });
    });

    it('kills at once on a killNow that comes before the process announced its start', async () => {
      const { logger, entries } = recordingLogger();
      const run = nodeRunner(LONG, 60_000, logger).start(assignment(), new LineRecorder());
      // The same turn as start(): the child's `spawn` event has not come yet.
      run.killNow();
      await expect(run.outcome).resolves.toEqual({
        type: 'fail',
        error: 'the sidecar shut down before the task finished',
        retryable: true,
        kind: 'error',
      });
      // A stop sent only once the start was announced would be a SIGTERM, after the grace a SIGKILL.
      expect(entries().find((entry) => entry.msg === 'task process ended')).toMatchObject({
        signal: 'SIGKILL',
      });
    });

    it('signals the group no more once it is gone: its id may lead another group by then', async () => {
      const sink = new LineRecorder();
      let pid: number | undefined;
      sink.started = (started) => void (pid = started.pid);
      const run = nodeRunner(`console.log('done')`).start(assignment(), sink);
      await expect(run.outcome).resolves.toMatchObject({ type: 'complete' });
      expect(pid).toEqual(expect.any(Number));
      const kill = jest.spyOn(process, 'kill');
      try {
        // the second signal of a sidecar stopping, after the task ended
        run.killNow();
        run.stop('shutdown');
        expect(kill.mock.calls.filter(([target]) => target === -(pid ?? 0))).toEqual([]);
      } finally {
        kill.mockRestore();
      }
    });
  });
});

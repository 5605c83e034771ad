import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { recordingLogger, testLogger } from '../test-support/logger';
import { makeTempDir } from '../test-support/temp-dir';
import { writeFileAtomic } from './atomic-write';
import { INTERRUPTED_ERROR, Outbox, STATE_FILE_NAME } from './outbox';
import { SIDECAR_VERSION } from '../version';
import { StateFileError } from './state-file-error';
import { StateDirInUseError, acquireStateLock } from './state-lock';
import { STATE_FILE_VERSION, type HeldTask, type Report } from './state-schema';

let dir: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterEach(async () => {
  await cleanup();
});

const complete: Report = { type: 'complete', taskId: 't1', token: 'k1', result: { answer: 42 } };
const fail: Report = {
  type: 'fail',
  taskId: 't0',
  token: 'k0',
  error: 'exit code 1',
  retryable: true,
};

async function readState(): Promise<unknown> {
  return JSON.parse(await readFile(join(dir, STATE_FILE_NAME), 'utf8'));
}

describe('writeFileAtomic', () => {
  it('replaces the file, owner-only, and leaves no temporary file behind', async () => {
    const path = join(dir, 'file.json');
    await writeFileAtomic(path, 'one');
    await writeFileAtomic(path, 'two');
    expect(await readFile(path, 'utf8')).toBe('two');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['file.json']);
  });
});

describe('Outbox', () => {
  describe('on a fresh state dir', () => {
    it('starts empty and creates nothing until the first change', async () => {
      const outbox = await Outbox.open(join(dir, 'nested', 'state'), testLogger());
      expect(outbox.current).toBeUndefined();
      expect(outbox.reports).toEqual([]);
      expect(await readdir(join(dir, 'nested', 'state'))).toEqual([]);
      expect((await stat(join(dir, 'nested', 'state'))).mode & 0o777).toBe(0o700);
    });
  });

  describe('through a task lifecycle', () => {
    it('writes every step durably and reloads it', async () => {
      const outbox = await Outbox.open(dir, testLogger());
      await outbox.holdTask({ taskId: 't1', token: 'k1', attempt: 1 });
      expect(await readState()).toEqual({
        version: 1,
        current: { taskId: 't1', token: 'k1', attempt: 1, state: 'working' },
        outbox: [],
      });

      await outbox.finishTask(complete);
      const reloaded = await Outbox.open(dir, testLogger());
      expect(reloaded.current).toEqual({
        taskId: 't1',
        token: 'k1',
        attempt: 1,
        state: 'finished',
      });
      expect(reloaded.reports).toEqual([complete]);

      const [report] = reloaded.reports;
      await reloaded.removeReport(report as Report);
      expect(await readState()).toEqual({ version: 1, outbox: [] });
    });

    it('keeps a finished report when a new task replaces the held one', async () => {
      const outbox = await Outbox.open(dir, testLogger());
      await outbox.holdTask({ taskId: 't1', token: 'k1', attempt: 1 });
      await outbox.finishTask(complete);
      await outbox.holdTask({ taskId: 't2', token: 'k2', attempt: 1 });
      await outbox.removeReport(complete);
      expect(outbox.current).toEqual({ taskId: 't2', token: 'k2', attempt: 1, state: 'working' });
      expect(outbox.reports).toEqual([]);
    });

    it('forgets a dropped task, but only the one named', async () => {
      const outbox = await Outbox.open(dir, testLogger());
      await outbox.holdTask({ taskId: 't1', token: 'k1', attempt: 1 });
      await outbox.dropTask({ taskId: 't1', token: 'other' });
      expect(outbox.current?.taskId).toBe('t1');
      await outbox.dropTask({ taskId: 't1', token: 'k1' });
      expect(outbox.current).toBeUndefined();
      expect(await readState()).toEqual({ version: 1, outbox: [] });
    });

    it('ends at the latest state when changes are not awaited one by one', async () => {
      const outbox = await Outbox.open(dir, testLogger());
      const writes: Array<Promise<void>> = [];
      for (let i = 0; i < 20; i++) {
        writes.push(outbox.finishTask({ ...fail, taskId: `t${i}` }));
      }
      await Promise.all(writes);
      const reloaded = await Outbox.open(dir, testLogger());
      expect(reloaded.reports.map((report) => report.taskId)).toEqual(
        Array.from({ length: 20 }, (_, i) => `t${i}`),
      );
    });
  });

  describe('when the previous process died mid-task', () => {
    it('turns the working task into a retryable failure report', async () => {
      const first = await Outbox.open(dir, testLogger());
      await first.holdTask({ taskId: 't1', token: 'k1', attempt: 2 });

      const second = await Outbox.open(dir, testLogger());
      expect(second.current).toEqual({ taskId: 't1', token: 'k1', attempt: 2, state: 'finished' });
      expect(second.reports).toEqual([
        {
          type: 'fail',
          taskId: 't1',
          token: 'k1',
          error: INTERRUPTED_ERROR,
          retryable: true,
          kind: 'error',
        },
      ]);
      expect(await readState()).toMatchObject({ current: { state: 'finished' } });
    });

    it('hands the task, with its recorded process, to beforeReportingInterrupted before reporting it', async () => {
      const first = await Outbox.open(dir, testLogger());
      await first.holdTask({ taskId: 't1', token: 'k1', attempt: 1 });
      const process = { pid: 4242, startTime: 123456, bootId: 'boot-1' };
      await first.recordProcess({ taskId: 't1', token: 'k1' }, process);
      expect(await readState()).toMatchObject({ current: { state: 'working', process } });

      const seen: Array<{ held: HeldTask; stateFile: unknown }> = [];
      const second = await Outbox.open(dir, testLogger(), {
        beforeReportingInterrupted: async (held) => {
          seen.push({ held, stateFile: await readState() });
        },
      });
      expect(seen).toEqual([
        {
          held: { taskId: 't1', token: 'k1', attempt: 1, state: 'working', process },
          stateFile: {
            version: 1,
            current: { taskId: 't1', token: 'k1', attempt: 1, state: 'working', process },
            outbox: [],
          },
        },
      ]);
      expect(second.reports).toMatchObject([{ type: 'fail', error: INTERRUPTED_ERROR }]);

      let calls = 0;
      await Outbox.open(dir, testLogger(), {
        beforeReportingInterrupted: async () => {
          calls++;
        },
      });
      expect(calls).toBe(0);
    });

    it('loads a state file written before processes were recorded', async () => {
      await writeFile(
        join(dir, STATE_FILE_NAME),
        '{"version":1,"current":{"taskId":"t1","token":"k1","attempt":3,"state":"working"},"outbox":[]}\n',
      );
      const held: HeldTask[] = [];
      const outbox = await Outbox.open(dir, testLogger(), {
        beforeReportingInterrupted: async (task) => {
          held.push(task);
        },
      });
      expect(held).toEqual([{ taskId: 't1', token: 'k1', attempt: 3, state: 'working' }]);
      expect(outbox.reports).toMatchObject([
        { type: 'fail', taskId: 't1', error: INTERRUPTED_ERROR },
      ]);
      expect(await readdir(dir)).toEqual([STATE_FILE_NAME]);
    });

    it('records a process only for the held task while it is working', async () => {
      const outbox = await Outbox.open(dir, testLogger());
      await outbox.holdTask({ taskId: 't1', token: 'k1', attempt: 1 });
      await outbox.recordProcess({ taskId: 't1', token: 'other' }, { pid: 1 });
      await outbox.finishTask({ ...fail, taskId: 't1', token: 'k1' });
      await outbox.recordProcess({ taskId: 't1', token: 'k1' }, { pid: 2 });
      expect(outbox.current).toEqual({ taskId: 't1', token: 'k1', attempt: 1, state: 'finished' });
      expect(await readState()).not.toHaveProperty('current.process');
    });

    it('removes temporary files a crashed write left', async () => {
      await writeFile(join(dir, `.${STATE_FILE_NAME}.tmp-123-abcd`), '{"half":');
      await Outbox.open(dir, testLogger());
      expect(await readdir(dir)).toEqual([]);
    });
  });

  describe('when the state file is corrupt', () => {
    it.each([
      ['not JSON', '{"version":1,"outbox":['],
      [
        'the wrong shape',
        JSON.stringify({ version: 1, outbox: [{ type: 'complete', taskId: 't1' }] }),
      ],
      ['an unknown field', JSON.stringify({ version: 1, outbox: [], extra: true })],
      ['a version that is not a number', JSON.stringify({ version: '2', outbox: [] })],
      ['an older version', JSON.stringify({ version: 0, outbox: [] })],
    ])('moves a file with %s aside and starts empty', async (_case, text) => {
      await writeFile(join(dir, STATE_FILE_NAME), text);
      const { logger, entries } = recordingLogger();
      const outbox = await Outbox.open(dir, logger);
      expect(outbox.current).toBeUndefined();
      expect(outbox.reports).toEqual([]);

      const files = await readdir(dir);
      expect(files).toHaveLength(1);
      expect(files[0]).toMatch(/^state\.json\.corrupt-\d+$/);
      expect(await readFile(join(dir, files[0] as string), 'utf8')).toBe(text);
      const logged = entries().find((entry) => entry.movedTo === join(dir, files[0] as string));
      expect(logged?.level).toBe(50);
      expect(logged?.msg).toMatch(/^the state file is corrupt/);
    });
  });

  describe('when a newer sidecar wrote the state file', () => {
    it('refuses it and leaves the state dir exactly as it was', async () => {
      const path = join(dir, STATE_FILE_NAME);
      const version = STATE_FILE_VERSION + 1;
      // A shape this sidecar does not know, holding a running task and an undelivered report.
      const bytes = Buffer.from(
        `${JSON.stringify({
          version,
          current: { taskId: 't1', token: 'k1', attempt: 1, state: 'working', lease: 'new' },
          outbox: [{ ...complete, taskId: 't0', token: 'k0' }],
          newField: true,
        })}\n`,
      );
      await writeFile(path, bytes);
      const leftover = `.${STATE_FILE_NAME}.tmp-123-abcd`;
      await writeFile(join(dir, leftover), '{"half":');
      const { logger, entries } = recordingLogger();
      const interrupted: HeldTask[] = [];

      const refused = Outbox.open(dir, logger, {
        beforeReportingInterrupted: async (held) => {
          interrupted.push(held);
        },
      });
      await expect(refused).rejects.toBeInstanceOf(StateFileError);
      await expect(refused).rejects.toMatchObject({
        path,
        message:
          `${path} was written by a newer sidecar (state file version ${version}; this ` +
          `sidecar, ${SIDECAR_VERSION}, reads version ${STATE_FILE_VERSION}) and may hold ` +
          'undelivered results: upgrade the sidecar back to a version that reads it, or move ' +
          'the file aside to start empty (losing the task and reports it holds)',
      });
      expect((await readFile(path)).equals(bytes)).toBe(true);
      expect((await readdir(dir)).sort()).toEqual([leftover, STATE_FILE_NAME].sort());
      expect(interrupted).toEqual([]);
      expect(entries()).toEqual([]);
    });
  });
});

describe('acquireStateLock', () => {
  it('refuses a second holder while the first is alive, and frees on release', async () => {
    const lock = await acquireStateLock(dir);
    await expect(acquireStateLock(dir)).rejects.toBeInstanceOf(StateDirInUseError);
    await lock.release();
    const again = await acquireStateLock(dir);
    await again.release();
  });

  it('takes over a lock whose process is gone', async () => {
    const child = spawn(process.execPath, ['-e', '']);
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(0);
    await writeFile(join(dir, 'sidecar.lock'), `${child.pid ?? 0}\n`);
    const lock = await acquireStateLock(dir);
    const [pid] = (await readFile(join(dir, 'sidecar.lock'), 'utf8')).split('\n');
    expect(pid).toBe(String(process.pid));
    await lock.release();
  });
});

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskAssign } from '@agentcom/shared';
import { buildBundle, CliProcesses } from './cli-process';
import { FakeHub } from './fake-hub';
import { makeTempDir } from './temp-dir';

/** What a test of the bundled CLI works with; read it inside tests and hooks only. */
export interface CliFixture {
  /** The file's temp dir: the bundle and the scripts given to {@link useCliFixture}. */
  readonly dir: string;
  /** The test's own temp dir (its HOME, state dir and files), removed after it. */
  readonly work: string;
  /** The scripted hub of the test, started before it and stopped after it. */
  readonly hub: FakeHub;
  /** Starts the bundled CLI; whatever a test left running is killed after it. */
  readonly cli: CliProcesses;
}

/**
 * Registers the jest hooks of a test file that runs the bundled CLI against the scripted hub:
 * the bundle is built once into a temp dir with `scripts` (file name → source) beside it; each
 * test gets a fresh temp dir and a fresh {@link FakeHub}, and its CLI processes are killed after
 * it. Call it at the top of the file: its hooks run before the file's own.
 */
export function useCliFixture(scripts: Readonly<Record<string, string>>): CliFixture {
  let dir: string | undefined;
  let bundle: string | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  let work: string | undefined;
  let cleanupWork: (() => Promise<void>) | undefined;
  let hub: FakeHub | undefined;
  const cli = new CliProcesses(() => ready(bundle, 'bundle'));

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    bundle = await buildBundle(dir);
    for (const [name, source] of Object.entries(scripts)) {
      await writeFile(join(dir, name), source);
    }
  });
  afterAll(async () => {
    await cleanup?.();
  });
  beforeEach(async () => {
    ({ dir: work, cleanup: cleanupWork } = await makeTempDir());
    hub = new FakeHub();
    await hub.start();
  });
  afterEach(async () => {
    await cli.killAll();
    await hub?.stop();
    await cleanupWork?.();
  });

  return {
    get dir() {
      return ready(dir, 'dir');
    },
    get work() {
      return ready(work, 'work');
    },
    get hub() {
      return ready(hub, 'hub');
    },
    cli,
  };
}

function ready<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw new Error(`the CLI fixture's ${name} is read outside a test`);
  return value;
}

/** A `task:assign` of a task in the `default` queue, attempt 1 of 3, token `tok-<id>`. */
export function assignment(taskId: string, payload: unknown = {}): TaskAssign {
  return {
    task: { id: taskId, queue: 'default', payload, createdAt: 1 },
    token: `tok-${taskId}`,
    attempt: 1,
    attempts: 3,
  };
}

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HubProcess, TestProcess } from './processes';
import { startRedis, type RedisProcess } from './redis-server';

export interface HubProcessesOptions {
  /** `test`: a fresh Redis, directory and prefix for each test; `describe`: one for the block. */
  per: 'test' | 'describe';
  /** The start of the temporary directory's name, e.g. `agentcom-e2e-`. */
  dirPrefix?: string;
  /** Closes what the tests opened beyond the processes (agents, clients), before those are killed. */
  beforeKill?: () => void | Promise<void>;
}

export interface HubProcessesFixture {
  readonly redis: RedisProcess;
  /** A private temporary directory (sidecar state dirs, run logs): made on first use, removed at the end. */
  readonly dir: string;
  /** A fresh key prefix for the hubs the tests start. */
  readonly prefix: string;
  /** The hub and sidecar processes the tests started: killed (SIGKILL) at the end. */
  readonly hubs: HubProcess[];
  readonly sidecars: TestProcess[];
}

/**
 * A private Redis and temporary directory for hub and sidecar processes that the tests start
 * (`startHubProcess`, `startSidecarProcess`) and push to `hubs` and `sidecars`: the processes are
 * killed, the Redis and the directory removed, after each test or after the describe block.
 * The fields are filled in the `beforeEach` / `beforeAll` hook (they throw before).
 */
export function useHubProcesses(options: HubProcessesOptions): HubProcessesFixture {
  let started: { redis: RedisProcess; prefix: string } | undefined;
  let dir: string | undefined;
  const hubs: HubProcess[] = [];
  const sidecars: TestProcess[] = [];
  const [before, after] = options.per === 'test' ? [beforeEach, afterEach] : [beforeAll, afterAll];

  before(async () => {
    started = { redis: await startRedis(), prefix: `p${randomBytes(3).toString('hex')}` };
  });
  after(async () => {
    await options.beforeKill?.();
    await Promise.all(sidecars.splice(0).map((s) => s.kill('SIGKILL')));
    await Promise.all(hubs.splice(0).map((h) => h.kill('SIGKILL')));
    await started?.redis.dispose();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    started = undefined;
    dir = undefined;
  });

  const current = (): NonNullable<typeof started> => {
    if (!started) throw new Error('the hub processes fixture starts in its before hook');
    return started;
  };
  return {
    get redis() {
      return current().redis;
    },
    get dir() {
      current();
      dir ??= mkdtempSync(join(tmpdir(), options.dirPrefix ?? 'agentcom-test-'));
      return dir;
    },
    get prefix() {
      return current().prefix;
    },
    hubs,
    sidecars,
  };
}

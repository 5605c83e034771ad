import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { freePort } from './redis-server';
import { FAST_TIMINGS, TEST_ADMIN_KEY, api, eventually } from './hub';

export const ROOT = resolve(__dirname, '..', '..');
export const HUB_MAIN = join(ROOT, 'hub', 'dist', 'main.js');
export const SIDECAR_CLI = join(ROOT, 'sidecar', 'dist', 'cli.js');
export const RECORD_HANDLER = join(ROOT, 'test', 'fixtures', 'record-handler.mjs');
/**
 * `AGENTCOM_EXEC` of test/fixtures/record-handler.sh, the record handler in POSIX sh: for sidecars
 * that run hundreds of tasks, where a node process per task (about 0.1 s of CPU each) would set
 * the pace on a 2-core machine. Same run log, result and payload options (a flat payload).
 */
export const SH_RECORD_HANDLER = `/bin/sh ${join(ROOT, 'test', 'fixtures', 'record-handler.sh')}`;

/** What {@link TestProcess.exitReport} gives for a process that exited 0. */
export const CLEAN_EXIT = { exit: { code: 0, signal: null }, output: '' };

/** A child process of a test, with its output kept for assertions and post-mortems. */
export class TestProcess {
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString('utf8')).slice(-200_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((done) =>
      child.once('exit', (code, signal) => done({ code, signal })),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * How the process ended, with the tail of its output when it did not exit 0, so that a failed
   * `expect(await proc.exitReport()).toEqual(CLEAN_EXIT)` shows the process's own account.
   */
  async exitReport(tailChars = 6000): Promise<{
    exit: { code: number | null; signal: NodeJS.Signals | null };
    output: string;
  }> {
    const exit = await this.exited;
    return { exit, output: exit.code === 0 ? '' : this.output.slice(-tailChars) };
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    await this.exited;
  }
}

function requireBuilt(file: string): void {
  if (!existsSync(file))
    throw new Error(`${file} is missing: run \`make build\` (make test does) first`);
}

export interface HubProcess extends TestProcess {
  url: string;
  port: number;
  hubId: string;
}

/** Starts `agentcom-hub` as a child process and waits until /readyz answers 200. */
export async function startHubProcess(
  redisUrl: string,
  prefix: string,
  hubId: string,
  env: Record<string, string> = {},
  port?: number,
): Promise<HubProcess> {
  requireBuilt(HUB_MAIN);
  const listenPort = port ?? (await freePort());
  const child = spawn(process.execPath, [HUB_MAIN], {
    env: {
      ...process.env,
      REDIS_URL: redisUrl,
      PORT: String(listenPort),
      HOST: '127.0.0.1',
      HUB_ID: hubId,
      AGENTCOM_ADMIN_KEY: TEST_ADMIN_KEY,
      AGENTCOM_PREFIX: prefix,
      LOG_LEVEL: 'info',
      ...FAST_TIMINGS,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = Object.assign(new TestProcess(hubId, child), {
    url: `http://127.0.0.1:${listenPort}`,
    port: listenPort,
    hubId,
  });
  await eventually(
    async () => {
      if (!proc.running) throw new Error(`hub ${hubId} exited:\n${proc.output}`);
      const response = await fetch(`${proc.url}/readyz`).catch(() => undefined);
      return response?.status === 200 ? true : undefined;
    },
    { what: `hub ${hubId} ready`, timeoutMs: 20_000 },
  );
  return proc;
}

/**
 * Waits for processes started side by side (replicas boot at once, as a cluster's do): each one
 * that started is pushed to `into` (for the test to stop) before the first failure is thrown.
 */
export async function allStarted<T>(starting: Array<Promise<T>>, into: T[] = []): Promise<T[]> {
  const settled = await Promise.allSettled(starting);
  for (const result of settled) if (result.status === 'fulfilled') into.push(result.value);
  for (const result of settled) if (result.status === 'rejected') throw result.reason;
  return into;
}

export interface SidecarOptions {
  hubUrls: string[];
  agentId: string;
  token: string;
  stateDir: string;
  queues?: string[];
  exec?: string;
  env?: Record<string, string>;
  /** Flags after `run` (the settings above come through the environment). */
  args?: string[];
}

/** Writes the token file (0600) and starts `agentcom-sidecar run` as a child process. */
export function startSidecarProcess(options: SidecarOptions): TestProcess {
  requireBuilt(SIDECAR_CLI);
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
  const tokenFile = join(options.stateDir, 'token');
  writeFileSync(tokenFile, options.token, { mode: 0o600 });
  const child = spawn(process.execPath, [SIDECAR_CLI, 'run', ...(options.args ?? [])], {
    env: {
      ...process.env,
      AGENTCOM_HUB: options.hubUrls.join(','),
      AGENTCOM_AGENT: options.agentId,
      AGENTCOM_TOKEN_FILE: tokenFile,
      AGENTCOM_QUEUES: (options.queues ?? ['default']).join(','),
      AGENTCOM_EXEC: options.exec ?? `${process.execPath} ${RECORD_HANDLER}`,
      AGENTCOM_STATE_DIR: options.stateDir,
      AGENTCOM_HEARTBEAT_MS: FAST_TIMINGS.HEARTBEAT_MS,
      LOG_LEVEL: 'info',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new TestProcess(options.agentId, child);
}

/** Mints a token for `agentId` through the API. */
export async function mintToken(
  hubUrl: string,
  agentId: string,
  queues?: string[],
): Promise<string> {
  const created = await api<{ token: string }>(hubUrl, 'POST', '/v1/agents', {
    agentId,
    ...(queues ? { queues } : {}),
  });
  if (created.status >= 300)
    throw new Error(`minting a token for ${agentId} failed: ${created.status}`);
  return created.body.token;
}

/** Runs the bundled `agentcom-sidecar` once (local commands: done, fail, status) and collects its output. */
export async function runSidecarCli(
  args: string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  requireBuilt(SIDECAR_CLI);
  const child = spawn(process.execPath, [SIDECAR_CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdin.end(stdin ?? '');
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, stdout, stderr };
}

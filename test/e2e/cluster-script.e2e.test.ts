import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from '../helpers/processes';
import { clusterScriptEnv } from '../helpers/cluster-script';

const run = promisify(execFile);

/**
 * `make cluster` / `make cluster-down` (scripts/cluster.mjs) with a pids file that outlived its
 * processes (a reboot, a kill -9 of everything): the pids in it may belong to anything by now.
 */
jest.setTimeout(90_000);

describe('scripts/cluster.mjs and a stale pids file', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let stranger: ChildProcess;
  let strangerExit: Promise<string>;

  const cluster = (...args: string[]) =>
    run(process.execPath, [join(ROOT, 'scripts', 'cluster.mjs'), ...args], { env, cwd: ROOT });

  /** A pids file naming, for each role, a live process `up` never started. */
  const writeStalePids = (pid: number) =>
    writeFileSync(join(dir, 'pids'), `redis ${pid}\nhub1 ${pid}\nhaproxy ${pid}\n`);

  /** Resolves `alive` when the stranger answers on stdin, `exited` if it was killed instead. */
  const strangerState = (): Promise<string> =>
    Promise.race([
      strangerExit,
      new Promise<string>((resolve) => {
        stranger.stdout!.once('data', () => resolve('alive'));
        stranger.stdin!.write('ping\n');
      }),
    ]);

  /** The pids `up` recorded, by name. */
  const recordedPids = () =>
    new Map(
      readFileSync(join(dir, 'pids'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => line.split(' '))
        .map(([name, pid]) => [name, Number(pid)]),
    );

  /** Linux: whether `pid` runs (a zombie waiting for init to reap it does not). */
  const running = (pid: number): boolean => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
    } catch {
      return false;
    }
  };

  beforeEach(async () => {
    ({ dir, env } = await clusterScriptEnv('agentcom-cluster-script-'));
    stranger = spawn(
      process.execPath,
      ['-e', "process.stdin.on('data', () => process.stdout.write('pong\\n'))"],
      { stdio: ['pipe', 'pipe', 'ignore'] },
    );
    strangerExit = new Promise((resolve) => stranger.once('exit', () => resolve('exited')));
    await strangerState();
  });
  afterEach(async () => {
    stranger.kill('SIGKILL');
    await strangerExit;
    await cluster('down'); // what a failed test left running
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}-shims`, { recursive: true, force: true });
  });

  it('down signals no process that is not the one up started', async () => {
    writeStalePids(stranger.pid!);
    await cluster('down');
    expect(await strangerState()).toBe('alive');
  });

  it('up is not refused by it, and down then stops exactly what up started', async () => {
    writeStalePids(stranger.pid!);
    const { stdout } = await cluster('up', '1');
    expect(stdout).toContain('load balancer');
    const started = [...recordedPids().values()];
    expect(started).toHaveLength(3); // up starts afresh: redis, hub1, haproxy
    expect(started).not.toContain(stranger.pid);
    expect(started.filter((pid) => !running(pid))).toEqual([]);

    await cluster('down');
    expect(started.filter(running)).toEqual([]);
    expect(await strangerState()).toBe('alive');
  });

  it('up waits for the whole pid in a pid file that exists before the pid is in it', async () => {
    // Redis forks, then creates its pid file and writes the pid when it closes it: this
    // redis-server holds the file empty for 500 ms first, as a loaded machine may
    const { stdout: realRedis } = await run('sh', ['-c', 'command -v redis-server']);
    const shims = `${dir}-shims`; // outside the cluster's dir, which up empties
    mkdirSync(shims);
    writeFileSync(
      join(shims, 'redis-server'),
      [
        '#!/bin/sh',
        'pidfile=""; prev=""',
        'for arg in "$@"; do [ "$prev" = "--pidfile" ] && pidfile="$arg"; prev="$arg"; done',
        ': > "$pidfile"',
        `( sleep 0.5; exec ${realRedis.trim()} "$@" ) > /dev/null 2>&1 &`,
        '',
      ].join('\n'),
    );
    chmodSync(join(shims, 'redis-server'), 0o755);
    env = { ...env, PATH: `${shims}:${env.PATH ?? ''}` };

    await cluster('up', '1');
    const redisPid = recordedPids().get('redis')!;
    expect(redisPid).toBeGreaterThan(0);
    expect(readFileSync(`/proc/${redisPid}/cmdline`, 'utf8')).toContain('redis-server');
    await cluster('down');
    expect(running(redisPid)).toBe(false);
  });
});

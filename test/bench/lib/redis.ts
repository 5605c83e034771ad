import { redisServerArgs, waitForRedis } from '../../../hub/src/embedded-redis';
import { freePort } from '../../helpers/redis-server';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Proc } from './procs';

export function redisServerVersion(): string {
  try {
    const out = execFileSync('redis-server', ['--version'], { encoding: 'utf8' });
    return /v=(\S+)/.exec(out)?.[1] ?? out.trim();
  } catch {
    return 'unknown';
  }
}

/** A snapshot of the counters the Redis-cost figures are computed from. */
export interface RedisCounters {
  /** Calls per command (`INFO commandstats`), Lua-internal calls included. */
  calls: Map<string, number>;
  /** Microseconds spent per command (`INFO commandstats` usec; a script's includes its calls). */
  usec: Map<string, number>;
  /** `total_commands_processed` (`INFO stats`). */
  totalCommands: number;
  /** `used_cpu_user + used_cpu_sys` in ms (`INFO cpu`). */
  cpuMs: number;
}

/** Commands the benchmark itself sends to read the counters: left out of every figure. */
export const OBSERVER_COMMANDS = new Set(['info', 'ping', 'flushall', 'config|resetstat']);

/** A private `redis-server` on a free loopback port, without persistence. */
export class RedisServer {
  readonly url: string;
  /** The benchmark's own connection (INFO, FLUSHALL): its commands are left out of the figures. */
  readonly client: Redis;

  private constructor(
    readonly port: number,
    readonly proc: Proc,
    private readonly dir: string,
  ) {
    this.url = `redis://127.0.0.1:${port}`;
    this.client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 3 });
    this.client.on('error', () => undefined);
  }

  static async start(): Promise<RedisServer> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'agentcom-bench-redis-'));
    const proc = Proc.start(
      'redis-server',
      'redis-server',
      redisServerArgs(port, dir, {
        appendonly: false,
        extra: ['--protected-mode', 'no', '--maxclients', '20000'],
      }),
    );
    await waitForRedis(port, () =>
      proc.running ? undefined : `redis-server exited:\n${proc.tail()}`,
    );
    return new RedisServer(port, proc, dir);
  }

  get pid(): number {
    return this.proc.pid;
  }

  async info(section: string): Promise<Map<string, string>> {
    const text = await this.client.info(section);
    const fields = new Map<string, string>();
    for (const line of text.split('\r\n')) {
      const at = line.indexOf(':');
      if (at > 0 && !line.startsWith('#')) fields.set(line.slice(0, at), line.slice(at + 1));
    }
    return fields;
  }

  async counters(): Promise<RedisCounters> {
    const [stats, commandstats, cpu] = await Promise.all([
      this.info('stats'),
      this.info('commandstats'),
      this.info('cpu'),
    ]);
    const calls = new Map<string, number>();
    const usec = new Map<string, number>();
    for (const [key, value] of commandstats) {
      if (!key.startsWith('cmdstat_')) continue;
      const name = key.slice('cmdstat_'.length);
      const n = /calls=(\d+)/.exec(value);
      if (n) calls.set(name, Number(n[1]));
      const u = /usec=(\d+)/.exec(value);
      if (u) usec.set(name, Number(u[1]));
    }
    return {
      calls,
      usec,
      totalCommands: Number(stats.get('total_commands_processed') ?? 0),
      cpuMs: (Number(cpu.get('used_cpu_user') ?? 0) + Number(cpu.get('used_cpu_sys') ?? 0)) * 1000,
    };
  }

  async usedMemory(): Promise<number> {
    return Number((await this.info('memory')).get('used_memory') ?? 0);
  }

  async flush(): Promise<void> {
    await this.client.flushall();
  }

  async stop(): Promise<void> {
    this.client.disconnect();
    await this.proc.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Difference of two counter snapshots, observer commands left out. */
export function countersDelta(
  before: RedisCounters,
  after: RedisCounters,
): {
  byCommand: Map<string, number>;
  usecByCommand: Map<string, number>;
  all: number;
  scriptCalls: number;
  cpuMs: number;
} {
  const byCommand = new Map<string, number>();
  let all = 0;
  for (const [name, calls] of after.calls) {
    if (OBSERVER_COMMANDS.has(name)) continue;
    const delta = calls - (before.calls.get(name) ?? 0);
    if (delta <= 0) continue;
    byCommand.set(name, delta);
    all += delta;
  }
  const usecByCommand = new Map<string, number>();
  for (const [name, us] of after.usec) {
    if (OBSERVER_COMMANDS.has(name)) continue;
    const delta = us - (before.usec.get(name) ?? 0);
    if (delta > 0) usecByCommand.set(name, delta);
  }
  const scriptCalls =
    (byCommand.get('evalsha') ?? 0) +
    (byCommand.get('eval') ?? 0) +
    (byCommand.get('fcall') ?? 0) +
    (byCommand.get('evalsha_ro') ?? 0);
  return { byCommand, usecByCommand, all, scriptCalls, cpuMs: after.cpuMs - before.cpuMs };
}

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { Redis } from 'ioredis';

/** A `redis-server` child process with AOF on, for running agentcom without a Redis of one's own. */
export interface EmbeddedRedis {
  readonly url: string;
  readonly dir: string;
  /** True when this process started it (false: one was already answering on the port). */
  readonly owned: boolean;
  stop(): Promise<void>;
}

export const REDIS_MISSING_MESSAGE =
  'redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install redis-server, macOS: brew install redis) or set REDIS_URL';

/** One PING to 127.0.0.1:`port`: true when a Redis answers (also used by tests and benchmarks). */
export async function answersPing(port: number): Promise<boolean> {
  const client = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/**
 * The command line of a `redis-server` on 127.0.0.1:`port` with its files in `dir`: no RDB
 * snapshots, no eviction (BullMQ needs every key), the AOF on or off; `extra` is appended (also
 * used by tests and benchmarks, so every Redis the project starts is configured here).
 */
export function redisServerArgs(
  port: number,
  dir: string,
  options: { appendonly: boolean; extra?: readonly string[] },
): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    options.appendonly ? 'yes' : 'no',
    '--appendfsync',
    'everysec',
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    ...(options.extra ?? []),
  ];
}

/**
 * Polls PING until a Redis answers on 127.0.0.1:`port`. Rejects after `timeoutMs`, or as soon as
 * `failure()` names a reason it never will (the process could not start, or exited).
 */
export async function waitForRedis(
  port: number,
  failure: () => string | undefined,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const reason = failure();
    if (reason !== undefined) throw new Error(reason);
    if (await answersPing(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs / 1000} s`);
}

/**
 * Spawns `redis-server` with `args` (see {@link redisServerArgs}) and resolves once it answers
 * PING on `port`. Rejects, with the process killed, when it cannot start
 * ({@link REDIS_MISSING_MESSAGE} when none is installed), exits, or does not answer in time;
 * `dir` names where its files are, for the message; `detached` puts it in a process group of its
 * own. Used by the embedded Redis and the tests.
 */
export async function spawnRedisServer(
  port: number,
  args: readonly string[],
  dir: string,
  options: { detached?: boolean } = {},
): Promise<ChildProcess> {
  const child = spawn('redis-server', args, { stdio: 'ignore', detached: options.detached });
  let failed: string | undefined;
  child.once('error', (err: NodeJS.ErrnoException) => {
    failed =
      err.code === 'ENOENT'
        ? REDIS_MISSING_MESSAGE
        : `redis-server could not start: ${err.message}`;
  });
  child.once('exit', (code, signal) => {
    failed ??= `redis-server exited with ${code ?? signal} (see ${dir})`;
  });
  try {
    await waitForRedis(port, () => failed);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return child;
}

/**
 * Starts `redis-server` on 127.0.0.1:`port` with its AOF under `<dataDir>/redis`, or reuses one
 * already answering there (so several replicas on one machine share it). Rejects with
 * {@link REDIS_MISSING_MESSAGE} when no redis-server is installed.
 */
export async function startEmbeddedRedis(dataDir: string, port: number): Promise<EmbeddedRedis> {
  const url = `redis://127.0.0.1:${port}`;
  const dir = resolve(dataDir, 'redis');
  if (await answersPing(port)) {
    return { url, dir, owned: false, stop: async () => undefined };
  }
  mkdirSync(dir, { recursive: true });
  // In a process group of its own: Ctrl-C in a terminal signals the whole foreground group, and
  // the hub stops Redis itself once it has stopped using it. (Debian's redis-server already
  // leaves the hub's group by itself; this does not rely on it.)
  const child = await spawnRedisServer(
    port,
    redisServerArgs(port, dir, { appendonly: true }),
    dir,
    {
      detached: true,
    },
  );
  return {
    url,
    dir,
    owned: true,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGTERM');
      }),
  };
}

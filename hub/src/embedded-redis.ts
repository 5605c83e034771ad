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
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'everysec',
      '--save',
      '',
      '--maxmemory-policy',
      'noeviction',
    ],
    { stdio: 'ignore' },
  );
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new Error(err.code === 'ENOENT' ? REDIS_MISSING_MESSAGE : `redis-server: ${err.message}`),
      ),
    );
    child.once('exit', (code) =>
      reject(new Error(`redis-server exited with code ${code} (see ${dir})`)),
    );
  });
  const ready = (async () => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (await answersPing(port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not answer on port ${port} within 10 s`);
  })();
  try {
    await Promise.race([ready, spawnError]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  spawnError.catch(() => undefined);
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

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { redisServerArgs, spawnRedisServer } from '../../hub/src/embedded-redis';

/** A private `redis-server` process on a free loopback port, for tests that need to kill it. */
export interface RedisProcess {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  readonly pid: number | undefined;
  /** SIGTERM (graceful) or SIGKILL, then wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Start again on the same port and dir (AOF data survives when `appendonly` is on). */
  restart(): Promise<void>;
  /** Kill the server and remove its directory. */
  dispose(): Promise<void>;
}

/** Ports {@link freePort} gave out in this process: none is given twice. */
const handedOut = new Set<number>();

/**
 * The ports this process gives out: a slice of its own per Jest worker, below the kernel's
 * ephemeral range, so that neither a test in another worker (should tests run in parallel) nor an
 * outgoing connection's local port can take a port between the check and its use, or while a
 * fault test has its Redis stopped before it restarts on the same port.
 */
const SLICE_BASE = 10_000;
const SLICE_SIZE = 3_000;
/** Linux's first ephemeral port (`net.ipv4.ip_local_port_range`'s default). */
const EPHEMERAL_FIRST = 32_768;
const SLICES = Math.floor((EPHEMERAL_FIRST - SLICE_BASE) / SLICE_SIZE);
const slice = (() => {
  const worker = Number(process.env.JEST_WORKER_ID ?? '1');
  const index = Number.isInteger(worker) && worker >= 1 ? (worker - 1) % SLICES : 0;
  return { first: SLICE_BASE + index * SLICE_SIZE, size: SLICE_SIZE };
})();
/** The next port of the slice to try: from a random start, so runs one after another differ. */
let cursor = Math.floor(Math.random() * slice.size);

/** The next port of this process's slice that was never given out (wrapping around). */
function nextCandidate(): number {
  for (let tries = 0; tries < slice.size; tries++) {
    const port = slice.first + (cursor++ % slice.size);
    if (!handedOut.has(port)) return port;
  }
  throw new Error(`every port of ${slice.first}-${slice.first + slice.size - 1} was given out`);
}

/**
 * A loopback port nothing listens on now, never one this process was given before: two calls in a
 * row can otherwise get the same port back from the kernel (a hub's HTTP port and its embedded
 * Redis's once collided that way), as nothing listens on the first until it is used.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = nextCandidate();
    if (await isFree(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no fresh free port in 50 tries');
}

/**
 * The first of `count` consecutive loopback ports nothing listens on now, none given out before
 * (for the scripts that put their hubs on a base port and the ones after it: `DEMO_HUB_BASE`,
 * `CLUSTER_HUB_BASE`). Each port is checked by listening on it.
 */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = nextCandidate();
    const ports = Array.from({ length: count }, (_, i) => base + i);
    const end = slice.first + slice.size;
    if (ports.some((port) => port >= end || handedOut.has(port))) continue;
    const free = await Promise.all(ports.map(isFree));
    if (free.every(Boolean)) {
      for (const port of ports) handedOut.add(port);
      cursor += count - 1;
      return base;
    }
  }
  throw new Error(`no ${count} consecutive free ports in 50 tries`);
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export interface StartRedisOptions {
  appendonly?: boolean;
  port?: number;
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisProcess> {
  const port = options.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'agentcom-redis-'));
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    const args = redisServerArgs(port, dir, {
      appendonly: options.appendonly ?? false,
      extra: ['--protected-mode', 'no'],
    });
    child = await spawnRedisServer(port, args, dir);
  };

  await launch();
  return {
    port,
    dir,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child?.pid;
    },
    stop,
    async restart() {
      await launch();
    },
    async dispose() {
      await stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };

  async function stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    await exited;
  }
}

/**
 * A private redis-server and a client of it (as BullMQ wants one: no retry limit) for the
 * enclosing describe block, started in `beforeAll` and closed in `afterAll`.
 */
export function useRedisClient(): { readonly server: RedisProcess; readonly client: Redis } {
  let server: RedisProcess | undefined;
  let client: Redis | undefined;
  beforeAll(async () => {
    server = await startRedis();
    client = new Redis(server.url, { maxRetriesPerRequest: null });
  });
  afterAll(async () => {
    await client?.quit();
    await server?.dispose();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the Redis starts in beforeAll');
    return value;
  };
  return {
    get server() {
      return started(server);
    },
    get client() {
      return started(client);
    },
  };
}

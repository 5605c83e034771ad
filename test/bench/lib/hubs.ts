import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Proc, rssKb } from './procs';
import { freePort } from '../../helpers/redis-server';
import { ADMIN_KEY, BENCH_DIR, HUB_MAIN, log, sleep } from './util';

export interface HubProc {
  readonly id: string;
  readonly url: string;
  readonly port: number;
  readonly proc: Proc;
  /** File the observer preload of this hub writes to (when started with `observe`). */
  readonly ioFile?: string;
}

export interface StartHubsOptions {
  redisUrl: string;
  redisPort: number;
  prefix: string;
  count: number;
  /** Extra environment (timings); the defaults of the hub apply otherwise. */
  env?: Record<string, string>;
  /** Node flags per hub index (e.g. `--cpu-prof` for one of them). */
  nodeArgs?: (index: number) => string[];
  /** Load the observer preload (`redis-io-counter.js`) into every hub: event-loop figures, and
   * with `countRedisIo` what each hub sends to Redis. */
  observe?: boolean;
  countRedisIo?: boolean;
}

/** Starts `count` real hub processes (`node hub/dist/main.js`) and waits until each is ready. */
export async function startHubs(options: StartHubsOptions): Promise<HubProc[]> {
  if (!existsSync(HUB_MAIN)) throw new Error(`${HUB_MAIN} is missing: run \`make build\``);
  const hubs: HubProc[] = [];
  for (let i = 0; i < options.count; i++) {
    const port = await freePort();
    const id = `${options.prefix}-hub-${i + 1}`;
    const ioFile =
      options.observe || options.countRedisIo ? join(BENCH_DIR, `io-${id}.json`) : undefined;
    const args = [
      ...(options.nodeArgs?.(i) ?? []),
      ...(ioFile ? ['--require', join(BENCH_DIR, 'redis-io-counter.js')] : []),
      HUB_MAIN,
    ];
    const proc = Proc.start(id, process.execPath, args, {
      env: {
        ...process.env,
        REDIS_URL: options.redisUrl,
        PORT: String(port),
        HOST: '127.0.0.1',
        HUB_ID: id,
        AGENTCOM_ADMIN_KEY: ADMIN_KEY,
        AGENTCOM_PREFIX: options.prefix,
        LOG_LEVEL: 'warn',
        ...(ioFile ? { BENCH_IO_FILE: ioFile } : {}),
        ...(options.countRedisIo ? { BENCH_REDIS_PORT: String(options.redisPort) } : {}),
        ...options.env,
      },
    });
    hubs.push({ id, url: `http://127.0.0.1:${port}`, port, proc, ...(ioFile ? { ioFile } : {}) });
  }
  await Promise.all(hubs.map((hub) => waitReady(hub)));
  return hubs;
}

/**
 * Starts `count` transport-floor stand-ins (`floor-hub.ts`: the hub's wire protocol and libraries,
 * nothing else) and waits until each is ready.
 */
export async function startFloorHubs(options: {
  prefix: string;
  count: number;
}): Promise<HubProc[]> {
  const hubs: HubProc[] = [];
  for (let i = 0; i < options.count; i++) {
    const port = await freePort();
    const id = `${options.prefix}-floor-${i + 1}`;
    const proc = Proc.start(id, process.execPath, [join(BENCH_DIR, 'floor-hub.js')], {
      env: { ...process.env, PORT: String(port), HOST: '127.0.0.1' },
    });
    hubs.push({ id, url: `http://127.0.0.1:${port}`, port, proc });
  }
  await Promise.all(hubs.map((hub) => waitReady(hub)));
  return hubs;
}

async function waitReady(hub: HubProc): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!hub.proc.running) throw new Error(`hub ${hub.id} exited:\n${hub.proc.tail()}`);
    const ok = await fetch(`${hub.url}/readyz`).then(
      (res) => res.status === 200,
      () => false,
    );
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`hub ${hub.id} not ready within 30 s:\n${hub.proc.tail()}`);
}

/** Stops hubs (SIGKILL by default: nothing to keep between benchmark phases). */
export async function stopHubs(
  hubs: readonly HubProc[],
  signal: NodeJS.Signals = 'SIGKILL',
): Promise<void> {
  await Promise.all(hubs.map((hub) => hub.proc.stop(signal, 20_000)));
  for (const hub of hubs) {
    if (hub.proc.output.includes('"level":50') || hub.proc.output.includes('"level":60')) {
      log(`${hub.id} logged errors:\n${hub.proc.tail(10)}`);
    }
  }
}

export function hubRssKb(hubs: readonly HubProc[]): number[] {
  return hubs.map((hub) => rssKb(hub.proc.pid) ?? 0);
}

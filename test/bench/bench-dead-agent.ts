/**
 * 5b. Dead agent: kill -9 of a real sidecar (`sidecar/dist/cli.js run`, exec handler that never
 * ends) while it runs a task; the time until the task runs on another agent. With the default
 * settings that is bounded by the lease (`LEASE_MS` 60 s, counted from the last extension) plus
 * the stalled checker's period (`STALLED_INTERVAL_MS` 15 s). QUICK scales the timings down (a
 * 60-75 s wait does not fit in the 2-minute budget) and says so.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTask, getTask, mintToken, requestJson } from './lib/http';
import { startHubs, stopHubs } from './lib/hubs';
import type { LoadSpec } from './lib/load-spec';
import { Proc, childPids } from './lib/procs';
import { info, runBench, type Figure } from './lib/result';
import { RedisServer } from './lib/redis';
import { RpcChild } from './lib/rpc';
import { BENCH_DIR, QUICK, SIDECAR_CLI, log, round, sleep, waitFor } from './lib/util';

const REPLICAS = 3;
/** QUICK: scaled down; full: the hub's and the sidecar's defaults. */
const TIMINGS: Record<string, string> = QUICK
  ? { LEASE_MS: '6000', HEARTBEAT_MS: '1000', STALLED_INTERVAL_MS: '1500', ACK_TIMEOUT_MS: '3000' }
  : {};
const LEASE_MS = Number(TIMINGS.LEASE_MS ?? 60_000);
const STALLED_MS = Number(TIMINGS.STALLED_INTERVAL_MS ?? 15_000);
const HEARTBEAT_MS = Number(TIMINGS.HEARTBEAT_MS ?? 5000);

runBench('dead-agent', 'Dead agent', QUICK ? 120_000 : 300_000, async () => {
  const redis = await RedisServer.start();
  const hubs = await startHubs({
    redisUrl: redis.url,
    redisPort: redis.port,
    prefix: 'dead',
    count: REPLICAS,
    env: TIMINGS,
  });
  const urls = hubs.map((hub) => hub.url);
  const stateDir = mkdtempSync(join(tmpdir(), 'agentcom-bench-sc-'));
  let sidecar: Proc | undefined;
  const rescuer = RpcChild.fork<LoadSpec>('rescuer', 'load-agents');
  try {
    const handler = join(BENCH_DIR, 'hold-handler.mjs');
    writeFileSync(handler, 'setTimeout(() => {}, 600_000);\n');
    const tokenFile = join(stateDir, 'token');
    writeFileSync(tokenFile, await mintToken(urls[0] ?? '', 'victim'), { mode: 0o600 });
    sidecar = Proc.start('sidecar', process.execPath, [SIDECAR_CLI, 'run'], {
      env: {
        ...process.env,
        AGENTCOM_HUB: urls.join(','),
        AGENTCOM_AGENT: 'victim',
        AGENTCOM_TOKEN_FILE: tokenFile,
        AGENTCOM_QUEUES: 'default',
        AGENTCOM_EXEC: `${process.execPath} ${handler}`,
        AGENTCOM_STATE_DIR: join(stateDir, 'state'),
        ...(QUICK ? { AGENTCOM_HEARTBEAT_MS: String(HEARTBEAT_MS) } : {}),
        LOG_LEVEL: 'warn',
      },
    });
    const running = sidecar;
    await waitFor(
      'the sidecar to be idle',
      async () => {
        if (!running.running) throw new Error(`sidecar exited:\n${running.tail()}`);
        const res = await requestJson<{ state?: string }>('GET', `${urls[0]}/v1/agents/victim`);
        return res.body.state === 'idle' ? true : undefined;
      },
      20_000,
      100,
    );
    const task = await createTask(urls[0] ?? '', { bench: 'dead-agent' });
    await waitFor(
      'the task to run on the sidecar',
      async () => {
        const view = await getTask(urls[0] ?? '', task.id);
        return view?.state === 'running' && view.agentId === 'victim' ? true : undefined;
      },
      20_000,
      100,
    );
    // another agent, idle, to take the task over
    await rescuer.call('init', {
      urls: [...urls.slice(1), ...urls.slice(0, 1)],
      idPrefix: 'rescuer',
      count: 1,
      queues: ['default'],
      heartbeatMs: HEARTBEAT_MS,
      holdMs: 0,
    });
    await sleep(QUICK ? 500 : 2000);

    const handlers = childPids(running.pid);
    const killedAt = Date.now();
    await running.stop('SIGKILL');
    for (const pid of handlers) {
      try {
        process.kill(-pid, 'SIGKILL'); // the handler runs in its own process group
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    log(`killed the sidecar (kill -9) while it ran task ${task.id}; waiting for another agent`);
    const bound = LEASE_MS + STALLED_MS + 30_000;
    const visibleAt = await waitFor(
      'the task to run on another agent',
      async () => {
        const view = await getTask(urls[1] ?? '', task.id);
        return view?.agentId === 'rescuer-0' ? Date.now() : undefined;
      },
      bound,
      200,
    );
    const infos = await rescuer.call('taskInfo', { taskIds: [task.id] });
    const assignedAt = infos[task.id]?.assignedAt;
    const completed = await waitFor(
      'the task to complete',
      async () =>
        (await getTask(urls[1] ?? '', task.id))?.state === 'completed' ? true : undefined,
      15_000,
      100,
    ).catch(() => false);

    const settings = QUICK
      ? `QUICK, scaled: LEASE_MS ${LEASE_MS}, STALLED_INTERVAL_MS ${STALLED_MS}, HEARTBEAT_MS ${HEARTBEAT_MS}`
      : `defaults: LEASE_MS ${LEASE_MS}, STALLED_INTERVAL_MS ${STALLED_MS}, HEARTBEAT_MS ${HEARTBEAT_MS}`;
    const figures: Figure[] = [
      info(
        'kill -9 of a sidecar → its task assigned to another agent',
        assignedAt === undefined ? 'not seen' : round((assignedAt - killedAt) / 1000),
        's',
        `${settings}; expected ≤ lease + stalled interval = ${(LEASE_MS + STALLED_MS) / 1000} s`,
      ),
      info(
        'kill -9 → the API shows it running elsewhere',
        round((visibleAt - killedAt) / 1000),
        's',
        'GET /v1/tasks/:id polled every 200 ms',
      ),
      info('the task then completed', completed ? 'yes' : 'no'),
    ];
    return {
      size: `1 real sidecar (exec handler that never ends) + 1 simulated agent, ${REPLICAS} replicas, ${settings}`,
      figures,
      details: { taskId: task.id, killedAt, assignedAt, visibleAt },
    };
  } finally {
    await rescuer.close();
    await sidecar?.stop('SIGKILL');
    await stopHubs(hubs);
    await redis.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
});

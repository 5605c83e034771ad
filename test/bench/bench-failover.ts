/**
 * 5a. Replica failover: kill -9 one of 3 replicas while N agents work on a steady flow of tasks
 * (default hub settings). How long until every agent of the dead replica is connected again
 * (the simulated agents reconnect like the sidecar: 3 attempts on a URL, then the next one), and
 * whether any task accepted with a 201 is lost.
 */
import { getTask, requestJson } from './lib/http';
import { info, runBench, type Figure } from './lib/result';
import { RedisServer } from './lib/redis';
import { startCluster } from './lib/scenarios';
import { QUICK, distribution, log, mapLimit, now, round, sleep } from './lib/util';

const AGENTS = QUICK ? 200 : 1000;
const REPLICAS = 3;
const RATE = QUICK ? 50 : 100;
const BEFORE_MS = QUICK ? 2000 : 4000;
const AFTER_MS = QUICK ? 3000 : 6000;
const HOLD_MS = 200;
/** Full: longer than lease + stalled interval (75 s), so what is not completed by then is lost. */
const SETTLE_TIMEOUT_MS = QUICK ? 15_000 : 120_000;

runBench('failover', 'Replica failover', QUICK ? 150_000 : 400_000, async () => {
  const redis = await RedisServer.start();
  const cluster = await startCluster({
    redis,
    prefix: 'fo',
    replicas: REPLICAS,
    agents: AGENTS,
    holdMs: HOLD_MS,
  });
  try {
    const { hubs, load } = cluster;
    const victim = hubs[0];
    if (!victim) throw new Error('no hub');
    const live = new Set(cluster.urls);
    const accepted: string[] = [];
    let refused = 0;
    let submitted = 0;

    /** POST round-robin over the live replicas; a failed POST tries the next one. */
    const post = async (index: number): Promise<void> => {
      for (let attempt = 0; attempt < REPLICAS; attempt++) {
        const urls = [...live];
        const url = urls[(index + attempt) % urls.length] ?? '';
        try {
          const res = await requestJson<{ id: string }>(
            'POST',
            `${url}/v1/tasks`,
            { payload: { i: index } },
            5000,
          );
          if (res.status === 201) {
            accepted.push(res.body.id);
            return;
          }
        } catch {
          // that replica is gone: next
        }
        refused++;
      }
    };
    const posts: Array<Promise<void>> = [];
    const steady = async (ms: number): Promise<void> => {
      const start = now();
      let sent = 0;
      while (now() - start < ms) {
        const due = Math.floor(((now() - start) * RATE) / 1000);
        while (sent < due) {
          posts.push(post(submitted++));
          sent++;
        }
        await sleep(2);
      }
    };

    await steady(BEFORE_MS);
    const sinceMs = await load.call('clock', {});
    const killedAt = now();
    await victim.proc.stop('SIGKILL');
    live.delete(victim.url);
    log(`killed ${victim.id} (kill -9) with tasks in flight`);
    await steady(AFTER_MS);
    await Promise.all(posts);

    const back = await load.call('waitConnected', { n: AGENTS, timeoutMs: SETTLE_TIMEOUT_MS });
    const reconnects = await load.call('reconnects', { sinceMs });
    const downtimes = distribution(reconnects.downtimes);
    log(
      `${reconnects.affected} agents lost their replica; back: ${back.connected}/${AGENTS}; downtime p50 ${downtimes.p50} ms, max ${downtimes.max} ms`,
    );

    // every task accepted with a 201 must complete, as the API shows it (agents may have been
    // answered `superseded` for a completion a dying replica applied)
    const url = [...live][0] ?? '';
    const deadline = now() + SETTLE_TIMEOUT_MS;
    let open = [...accepted];
    let allDoneMs: number | undefined;
    while (now() < deadline) {
      const views = await mapLimit(open, 32, (id) => getTask(url, id).catch(() => undefined));
      open = open.filter((_, i) => views[i]?.state !== 'completed');
      if (open.length === 0) {
        allDoneMs = now() - killedAt;
        break;
      }
      await sleep(500);
    }
    const states: Record<string, number> = {};
    await mapLimit(accepted, 32, async (id) => {
      const view = await getTask(url, id).catch(() => undefined);
      const state = view?.state ?? 'not found';
      states[state] = (states[state] ?? 0) + 1;
    });
    const lost = accepted.length - (states.completed ?? 0);
    const stats = await load.call('stats', {});
    // what the unfinished ones look like, for the report
    const unfinished: unknown[] = [];
    const kinds: Record<string, number> = {};
    for (const id of accepted) {
      const view = await getTask(url, id).catch(() => undefined);
      if (view?.state === 'completed') continue;
      const agent = view?.agentId
        ? (await requestJson<{ state?: string }>('GET', `${url}/v1/agents/${view.agentId}`)).body
        : undefined;
      const agentSide = (await load.call('taskInfo', { taskIds: [id] }))[id];
      // why it is not done yet
      const kind =
        view?.state === 'running' && agent?.state === 'idle'
          ? 'active job whose agent is idle (dispatch cut by the kill; requeued once the lease ends)'
          : view?.state === 'running' && (agentSide?.heldBy.length ?? 0) > 0
            ? 'agent holds the report, its replay not acknowledged'
            : `${view?.state ?? 'unknown'}`;
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      if (unfinished.length < 10) unfinished.push({ kind, task: view, agent, agentSide });
    }
    const why = Object.entries(kinds)
      .map(([kind, n]) => `${n}: ${kind}`)
      .join('; ');

    const figures: Figure[] = [
      info(
        'agents of the killed replica reconnected',
        `${reconnects.affected - reconnects.notReconnected} / ${reconnects.affected}`,
        '',
        `${back.connected}/${AGENTS} connected at the end`,
      ),
      info(
        'reconnect time per agent, p50 / p99 / max',
        `${downtimes.p50} / ${downtimes.p99} / ${downtimes.max}`,
        'ms',
        'disconnect → connected to another replica (sidecar policy: 3 tries on the dead URL, ~1.4 s of backoff)',
      ),
      info('time until all agents connected again', reconnects.allBackMs, 'ms'),
      // only a wait longer than lease + stalled interval (75 s) can call a task lost
      SETTLE_TIMEOUT_MS >= 75_000
        ? {
            name: `tasks lost (accepted with 201, not completed ${SETTLE_TIMEOUT_MS / 1000} s after the kill)`,
            value: lost,
            target: '0',
            pass: lost === 0,
            note: `states: ${JSON.stringify(states)}${why ? `; ${why}` : ''}`,
          }
        : info(
            `accepted tasks not completed ${SETTLE_TIMEOUT_MS / 1000} s after the kill`,
            lost,
            'tasks',
            `QUICK waits less than lease + stalled interval (75 s), so this does not count as lost; states: ${JSON.stringify(states)}${why ? `; ${why}` : ''}`,
          ),
      info(
        'kill → every accepted task completed',
        allDoneMs !== undefined
          ? `${round(allDoneMs / 1000)} s`
          : `not within ${SETTLE_TIMEOUT_MS / 1000} s`,
      ),
      info(
        'tasks accepted / POSTs refused by the dead replica (retried elsewhere)',
        `${accepted.length} / ${refused}`,
      ),
      info(
        'completions answered duplicate / superseded; accepts answered superseded; assigns to busy agents',
        `${stats.duplicates} / ${stats.reportsSuperseded}; ${stats.acceptsSuperseded}; ${stats.busyAssigns}`,
      ),
    ];
    return {
      size: `${AGENTS.toLocaleString('en-US')} agents over ${REPLICAS} replicas (default settings), ${RATE} tasks/s of ${HOLD_MS} ms each, kill -9 of one replica after ${BEFORE_MS / 1000} s`,
      figures,
      details: {
        reconnects: { ...reconnects, downtimes },
        states,
        stats,
        unfinished,
        kinds,
        ...(lost > 0
          ? { hubLogs: Object.fromEntries(hubs.map((hub) => [hub.id, hub.proc.tail(15)])) }
          : {}),
      },
    };
  } finally {
    await cluster.stop();
    await redis.stop();
  }
});

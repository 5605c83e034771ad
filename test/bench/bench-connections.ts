/**
 * 4. Connections: N idle agents over 3 replicas, each heartbeating at the sidecar's default
 * (5 s). Hub RSS per agent (RSS growth of each replica / agents on it), Redis memory per agent
 * (`used_memory` growth / N: agent records, token hashes, idle indexes, events), and CPU per
 * replica at idle (heartbeats, lease ticks, sweeper, engine.io pings) over a window.
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { summarizeProfile } from './lib/cpuprofile';
import { getQueues, requestJson } from './lib/http';
import { hubRssKb, startHubs, stopHubs } from './lib/hubs';
import type { LoadSpec } from './lib/load-spec';
import { CpuMeter } from './lib/procs';
import { atMost, info, runBench, type Figure } from './lib/result';
import { RedisServer } from './lib/redis';
import { RpcChild } from './lib/rpc';
import { BENCH_DIR, QUICK, log, now, round, sleep } from './lib/util';

const AGENTS = Number(process.env.BENCH_CONNECTIONS ?? (QUICK ? 1000 : 10_000));
const REPLICAS = 3;
const HEARTBEAT_MS = 5000;
const SETTLE_MS = QUICK ? 5500 : 12_000;
const WINDOW_MS = QUICK ? 5000 : 30_000;
/** `BENCH_CPU_PROF=1`: replica 1 runs under `--cpu-prof`; the window's profile is summarized. */
const PROFILE = process.env.BENCH_CPU_PROF === '1';
const PROFILE_DIR = join(BENCH_DIR, 'prof-connections');

async function sampleRss(pids: () => number[], samples = 4): Promise<number[]> {
  const sums = pids().map(() => 0);
  for (let i = 0; i < samples; i++) {
    pids().forEach((kb, j) => (sums[j] = (sums[j] ?? 0) + kb));
    await sleep(250);
  }
  return sums.map((s) => s / samples);
}

runBench('connections', 'Idle connections', QUICK ? 150_000 : 900_000, async () => {
  const redis = await RedisServer.start();
  if (PROFILE) {
    rmSync(PROFILE_DIR, { recursive: true, force: true });
    mkdirSync(PROFILE_DIR, { recursive: true });
  }
  const hubs = await startHubs({
    redisUrl: redis.url,
    redisPort: redis.port,
    prefix: 'conn',
    count: REPLICAS,
    ...(PROFILE
      ? {
          nodeArgs: (i: number) =>
            i === 0
              ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR, '--cpu-prof-name', 'hub-1.cpuprofile']
              : [],
        }
      : {}),
  });
  const urls = hubs.map((hub) => hub.url);
  const load = RpcChild.fork<LoadSpec>('load-agents', 'load-agents', {
    execArgv: ['--max-old-space-size=8192'],
  });
  try {
    await sleep(QUICK ? 1000 : 3000);
    const cpuPids = new Map<string, number>(hubs.map((hub, i) => [`hub-${i + 1}`, hub.proc.pid]));
    cpuPids.set('redis', redis.pid);
    const idleMeter = new CpuMeter(cpuPids);
    idleMeter.start();
    await sleep(QUICK ? 2000 : 5000);
    const idleBase = idleMeter.stop();
    const rssBase = await sampleRss(() => hubRssKb(hubs));
    const redisBase = await redis.usedMemory();
    log(`baseline: hub RSS ${rssBase.map((kb) => Math.round(kb / 1024)).join('/')} MiB`);

    // The agents' queue, opened by a task that no one takes during the run (a queue is opened on
    // every replica once a task was added to it; the agents alone name it and nothing more).
    const opened = await requestJson('POST', `${urls[0] ?? ''}/v1/tasks`, {
      payload: {},
      delayMs: 24 * 3600 * 1000,
    });
    if (opened.status !== 201) throw new Error(`POST /v1/tasks answered ${opened.status}`);
    const init = await load.call(
      'init',
      {
        urls,
        idPrefix: 'idle',
        count: AGENTS,
        queues: ['default'],
        heartbeatMs: HEARTBEAT_MS,
        holdMs: 0,
        mintConcurrency: 48,
        connectConcurrency: 200,
      },
      600_000,
    );
    log(
      `${init.connected}/${AGENTS} agents connected (tokens ${init.mintMs} ms, connect ${init.connectMs} ms, per replica ${init.perUrl.join('/')})`,
    );
    if (init.connected < AGENTS) throw new Error(`only ${init.connected}/${AGENTS} connected`);
    await sleep(SETTLE_MS);

    const before = await load.call('stats', {});
    const meter = new CpuMeter(new Map([...cpuPids, ['load', load.pid]]));
    meter.start();
    const windowFrom = now();
    await sleep(WINDOW_MS);
    const windowTo = now();
    const usage = meter.stop();
    const after = await load.call('stats', {});
    const rss = await sampleRss(() => hubRssKb(hubs));
    const redisUsed = await redis.usedMemory();
    const queues = await getQueues(urls[0] ?? '');
    const idleAgents = queues.find((q) => q.name === 'default')?.idleAgents ?? 0;

    const perReplica = init.perUrl;
    const rssPerAgentKb = rss.map(
      (kb, i) => (kb - (rssBase[i] ?? 0)) / Math.max(1, perReplica[i] ?? 1),
    );
    const worstRss = Math.max(...rssPerAgentKb);
    const redisPerAgent = (redisUsed - redisBase) / AGENTS;
    const hubCpu = hubs.map((_, i) => usage.byProcess[`hub-${i + 1}`]?.corePct ?? 0);
    const hubIdleCpu = hubs.map((_, i) => idleBase.byProcess[`hub-${i + 1}`]?.corePct ?? 0);
    const beats = after.heartbeatsOk - before.heartbeatsOk;
    const beatsPerSec = beats / (usage.windowMs / 1000);

    const figures: Figure[] = [
      atMost(
        'hub RSS per agent (worst replica)',
        worstRss,
        100,
        'KB',
        `per replica ${rssPerAgentKb.map((kb) => round(kb)).join(' / ')} KB; RSS ${rss.map((kb) => Math.round(kb / 1024)).join(' / ')} MiB, was ${rssBase.map((kb) => Math.round(kb / 1024)).join(' / ')} MiB`,
      ),
      atMost(
        'Redis memory per agent',
        redisPerAgent / 1024,
        2,
        'KB',
        `used_memory ${round(redisBase / 1048576)} → ${round(redisUsed / 1048576)} MiB`,
      ),
      atMost(
        'hub CPU per replica at idle (worst replica)',
        Math.max(...hubCpu),
        20,
        '% of a core',
        `per replica ${hubCpu.join(' / ')} %; without agents ${hubIdleCpu.join(' / ')} %`,
      ),
      info(
        'heartbeats acknowledged',
        round(beatsPerSec),
        '/s',
        `${after.heartbeatsFailed - before.heartbeatsFailed} failed in the window`,
      ),
      info('Redis CPU at idle', usage.byProcess.redis?.corePct ?? 0, '% of a core'),
      info('load process (all agents) CPU', usage.byProcess.load?.corePct ?? 0, '% of a core'),
      info(
        'tokens minted / agents connected in',
        `${round(init.mintMs / 1000)} / ${round(init.connectMs / 1000)}`,
        's',
      ),
      info(
        'idle agents listed by GET /v1/queues',
        idleAgents,
        '',
        idleAgents === AGENTS ? 'all' : `expected ${AGENTS}`,
      ),
    ];
    const profiled = hubs[0];
    if (PROFILE && profiled) {
      await profiled.proc.stop('SIGTERM', 30_000); // the profile is written at exit
      const file = readdirSync(PROFILE_DIR).find((name) => name.endsWith('.cpuprofile'));
      if (file) {
        const summary = summarizeProfile(join(PROFILE_DIR, file), {
          fromMs: windowFrom - profiled.proc.startedAt,
          toMs: windowTo - profiled.proc.startedAt,
        });
        log(`replica 1 busy ${summary.busyPct}% of the window`);
        for (const c of summary.categories.slice(0, 12)) log(`  ${c.name}: ${c.pct}%`);
        for (const f of summary.topSelf.slice(0, 25)) {
          log(`  ${f.fn} ${f.where} (${f.category}): ${f.pct}%`);
        }
        for (const f of summary.topAgentcomInclusive) log(`  incl. ${f.fn} ${f.where}: ${f.pct}%`);
      }
    }
    return {
      size: `${AGENTS.toLocaleString('en-US')} idle agents over ${REPLICAS} replicas (${perReplica.join('/')}), heartbeat ${HEARTBEAT_MS / 1000} s, CPU window ${WINDOW_MS / 1000} s`,
      figures,
      details: { init, usage, idleBase, rssBaseKb: rssBase, rssKb: rss, redisBase, redisUsed },
    };
  } finally {
    await load.close();
    await stopHubs(hubs);
    await redis.stop();
  }
});

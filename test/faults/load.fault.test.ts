import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { api, eventually } from '../helpers/hub';
import { completionsByTask, doubleHoldings } from '../helpers/invariants';
import { mintToken } from '../helpers/processes';
import { recordReliability } from '../helpers/reliability';
import { AutoAgent } from './auto-agent';
import { FaultCluster, size } from './fault-cluster';

const rssKb = (pid: number): number =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

jest.setTimeout(240_000);

describe('load: a burst of tasks over 3 replicas', () => {
  let cluster: FaultCluster;
  const agents: AutoAgent[] = [];
  afterEach(async () => {
    for (const agent of agents.splice(0)) agent.close();
    await cluster?.stop();
  });

  it('completes every task of a burst once, and retention trims finished tasks so memory stays bounded', async () => {
    const tasks = size(3000, 20_000);
    const agentCount = size(30, 50);
    const keep = size(500, 2000);
    cluster = new FaultCluster({ RETENTION_COMPLETED_COUNT: String(keep), LOG_LEVEL: 'warn' });
    await cluster.start({ hubs: 3, sidecars: 0 });
    const redis = new Redis(cluster.redis.url);
    try {
      for (let i = 0; i < agentCount; i++) {
        const agentId = `load-${i}`;
        const hub = cluster.hubs[i % 3]!;
        agents.push(new AutoAgent(hub.url, agentId, await mintToken(hub.url, agentId)));
      }
      await Promise.all(agents.map((a) => a.connected()));
      const rssBefore = cluster.hubs.map((h) => rssKb(h.pid));
      const redisBefore = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);

      const started = Date.now();
      for (let i = 0; i < tasks; i += 100) {
        await Promise.all(Array.from({ length: Math.min(100, tasks - i) }, () => cluster.submit()));
      }
      expect(cluster.accepted).toHaveLength(tasks);
      const submittedMs = Date.now() - started;
      await eventually(
        () => (agents.reduce((n, a) => n + a.completed, 0) >= tasks ? true : undefined),
        {
          what: `${tasks} completions`,
          timeoutMs: size(120_000, 600_000),
          intervalMs: 250,
        },
      );
      const tookMs = Date.now() - started;
      const rssAfter = cluster.hubs.map((h) => rssKb(h.pid));
      const redisAfter = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);

      const events = await cluster.events();
      const completions = completionsByTask(events);
      expect(cluster.accepted.filter((a) => completions.get(a.id) !== 1)).toEqual([]);
      expect(doubleHoldings(events)).toEqual([]);
      expect(agents.reduce((n, a) => n + a.failedReports, 0)).toBe(0);
      // retention: BullMQ keeps only the last `keep` completed tasks
      const queues = await api<{ queues: Array<{ name: string; counts: Record<string, number> }> }>(
        cluster.liveHub().url,
        'GET',
        '/v1/queues',
      );
      const counts = queues.body.queues.find((q) => q.name === 'default')!.counts;
      expect(counts.completed).toBeLessThanOrEqual(keep);
      expect([counts.waiting, counts.active, counts.delayed, counts.failed]).toEqual([0, 0, 0, 0]);
      // the retained ones carry the results the agents produced
      const retained = cluster.accepted.slice(-50);
      for (const task of retained) {
        expect((await cluster.task(task.id)).result).toEqual({
          taskId: task.id,
          value: task.value,
        });
      }
      recordReliability({
        scenario: 'Load',
        size: process.env.FULL === '1' ? 'full' : 'default',
        load: `${tasks} tasks in a burst, 3 replicas, ${agentCount} agents (protocol-level, in one process)`,
        faults: 'none (memory and retention under a burst)',
        tasks,
        lost: cluster.accepted.filter((a) => !completions.has(a.id)).length,
        duplicates: cluster.accepted.filter((a) => (completions.get(a.id) ?? 0) > 1).length,
        measured: {
          'submitted in': `${submittedMs} ms`,
          'all completed in': `${tookMs} ms (${Math.round((tasks * 1000) / tookMs)} tasks/s)`,
          'hub RSS before → after': rssBefore
            .map((b, i) => `${Math.round(b / 1024)}→${Math.round((rssAfter[i] ?? 0) / 1024)} MB`)
            .join(', '),
          'Redis used_memory before → after': `${(redisBefore / 1048576).toFixed(1)} → ${(redisAfter / 1048576).toFixed(1)} MB (retention ${keep} completed)`,
          'completed kept': String(counts.completed),
        },
      });
    } finally {
      redis.disconnect();
    }
  });
});

import { eventually } from '../helpers/hub';
import { recordReliability } from '../helpers/reliability';
import { expectExactlyOnce, FaultCluster, size } from './fault-cluster';

jest.setTimeout(240_000);

describe('Redis restart under load (appendonly yes, appendfsync everysec)', () => {
  let cluster: FaultCluster;
  afterEach(async () => cluster?.stop());

  const readiness = () =>
    Promise.all(
      cluster.hubs.map((h) =>
        fetch(`${h.url}/readyz`).then(
          (r) => r.status,
          () => 0,
        ),
      ),
    );

  it('recovers from SIGTERM and from kill -9 of Redis without manual action; tasks accepted > 1 s before a crash complete', async () => {
    cluster = new FaultCluster({ LEASE_MS: '15000' });
    await cluster.start({ hubs: 3, sidecars: 6, appendonly: true });
    const total = size(150, 400);
    const load = cluster.submitAtRate(total, 15, { sleepMs: 100 });
    const outages: Array<{
      signal: string;
      at: number;
      readyzDuring: number[];
      recoveredMs: number;
    }> = [];
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      await eventually(
        () => (cluster.accepted.length >= (outages.length + 1) * (total / 3) ? true : undefined),
        {
          what: 'load before the outage',
          timeoutMs: 60_000,
        },
      );
      const at = Date.now();
      await cluster.redis.stop(signal);
      const readyzDuring = await eventually(
        async () => {
          const statuses = await readiness();
          return statuses.every((s) => s === 503) ? statuses : undefined;
        },
        { what: '/readyz 503 on every replica while Redis is gone' },
      );
      await cluster.redis.restart();
      const restartedAt = Date.now();
      await eventually(
        async () => ((await readiness()).every((s) => s === 200) ? true : undefined),
        {
          what: 'every replica ready again',
          timeoutMs: 30_000,
        },
      );
      outages.push({ signal, at, readyzDuring, recoveredMs: Date.now() - restartedAt });
    }
    await load;
    const crash = outages.find((o) => o.signal === 'SIGKILL')!.at;
    // AOF everysec may lose the last second before a kill -9: those tasks are allowed to vanish
    const atRisk = new Set(
      cluster.accepted
        .filter((a) => a.acceptedAt > crash - 1000 && a.acceptedAt <= crash)
        .map((a) => a.id),
    );
    const result = await cluster.checkInvariants();
    expectExactlyOnce(result, { except: atRisk });
    const lost = result.notTerminal.filter((id) => !atRisk.has(id));
    recordReliability({
      scenario: 'Redis restart',
      size: process.env.FULL === '1' ? 'full' : 'default',
      load: `${cluster.accepted.length} tasks at 15/s, 3 replicas, 6 sidecars, AOF everysec`,
      faults: 'redis-server SIGTERM + restart, then kill -9 + restart, under load',
      tasks: cluster.accepted.length,
      lost: lost.length,
      duplicates: result.duplicates.length,
      measured: {
        'readyz while down': '503 on 3/3 replicas, both outages',
        'ready again after SIGTERM restart': `${outages[0]!.recoveredMs} ms`,
        'ready again after kill -9 restart': `${outages[1]!.recoveredMs} ms`,
        'tasks in the last second before kill -9 (may be lost)': `${atRisk.size}, lost ${result.notTerminal.filter((id) => atRisk.has(id)).length}`,
      },
    });
  });
});

describe('Redis restart without persistence (its data lost)', () => {
  let cluster: FaultCluster;
  afterEach(async () => cluster?.stop());

  it('keeps every sidecar serving: connected agents are recorded again at their next heartbeat', async () => {
    cluster = new FaultCluster();
    await cluster.start({ hubs: 2, sidecars: 4, appendonly: false });
    await cluster.redis.stop('SIGKILL');
    await cluster.redis.restart();
    // agent records, token hashes and idle indexes are gone: the next heartbeats record them again
    await cluster.waitIdle(4);
    for (let n = 0; n < 8; n++) await cluster.submit({ sleepMs: 50 });
    expectExactlyOnce(await cluster.checkInvariants(60_000));
    expect(cluster.sidecars.filter((s) => !s.running).map((s) => s.output.slice(-2000))).toEqual(
      [],
    );
  });
});

import { api, eventually } from '../helpers/hub';
import { percentile, recordReliability } from '../helpers/reliability';
import { expectExactlyOnce, FaultCluster, size } from './fault-cluster';

const ms = (n: number) => `${Math.round(n)} ms`;

jest.setTimeout(240_000);

describe('faults of a sidecar (LEASE_MS 3 s, STALLED_INTERVAL_MS 1 s)', () => {
  let cluster: FaultCluster;
  afterEach(async () => cluster?.stop());

  it('sidecar crash: the tasks of kill -9ed sidecars run elsewhere after lease + stalled interval', async () => {
    const agents = size(6, 12);
    const victims = size(2, 4);
    cluster = new FaultCluster();
    await cluster.start({ hubs: 2, sidecars: agents });
    for (let n = 0; n < agents; n++) await cluster.submit({ sleepMs: 2500 });
    await eventually(() => (cluster.starts().size >= agents ? true : undefined), {
      what: 'every agent at work',
    });
    const listed = await api<{
      agents: Array<{ agentId: string; currentTask?: { taskId: string } }>;
    }>(cluster.liveHub().url, 'GET', '/v1/agents');
    const killed = cluster.sidecars.slice(0, victims);
    const orphaned = killed.map(
      (s) => listed.body.agents.find((a) => a.agentId === s.name)?.currentTask?.taskId ?? '',
    );
    const killedAt = Date.now();
    await Promise.all(killed.map((s) => s.kill('SIGKILL')));
    const result = await cluster.checkInvariants();
    expectExactlyOnce(result);
    const events = await cluster.events();
    const rerunAfter = orphaned.map((taskId) => {
      const assign = events.find(
        (e) => e.task === taskId && e.reason === 'assign' && e.at > killedAt,
      );
      return assign ? assign.at - killedAt : Number.POSITIVE_INFINITY;
    });
    expect(rerunAfter.every((t) => t >= 2500 && Number.isFinite(t))).toBe(true);
    recordReliability({
      scenario: 'Sidecar crash',
      size: process.env.FULL === '1' ? 'full' : 'default',
      load: `${agents} sidecar processes, 2 replicas, one 2.5 s task each`,
      faults: `kill -9 of ${victims} sidecars mid-task`,
      tasks: cluster.accepted.length,
      lost: result.notTerminal.length,
      duplicates: result.duplicates.length,
      measured: {
        'kill → task re-assigned p50': ms(percentile(rerunAfter, 50)),
        'kill → task re-assigned max': ms(Math.max(...rerunAfter)),
        'lease + stalled interval': '3000 ms + 1000 ms',
      },
    });
  });

  it('partitioned agent: SIGSTOP longer than the lease, then SIGCONT: its late completion is superseded, the task completed once', async () => {
    cluster = new FaultCluster();
    await cluster.start({ hubs: 2, sidecars: 1 });
    const [frozen] = cluster.sidecars;
    const task = await cluster.submit({ sleepMs: 1500 });
    await eventually(() => (cluster.starts().get(task!.id) === 1 ? true : undefined), {
      what: 'the handler to start',
    });
    frozen!.child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    await cluster.startSidecar('rescuer', 1);
    const done = await eventually(
      async () => {
        const view = await cluster.task(task!.id);
        return view.state === 'completed' ? view : undefined;
      },
      { what: 'the rescuer to complete the task', timeoutMs: 30_000 },
    );
    expect(done.agentId).toBe('rescuer');
    frozen!.child.kill('SIGCONT');
    const resumedAt = Date.now();
    await eventually(
      () => (/E_ASSIGNMENT_SUPERSEDED|superseded/.test(frozen!.output) ? true : undefined),
      {
        what: 'the frozen sidecar to learn its assignment was superseded',
        timeoutMs: 20_000,
      },
    );
    const result = await cluster.checkInvariants();
    expectExactlyOnce(result, { allCompleted: false });
    expect(await cluster.task(task!.id)).toMatchObject({
      state: 'completed',
      agentId: 'rescuer',
      result: { taskId: task!.id },
    });
    await cluster.waitIdle(2);
    recordReliability({
      scenario: 'Partitioned agent',
      size: 'default',
      load: '1 task of 1.5 s, 2 replicas',
      faults: `SIGSTOP of the working sidecar for ${Math.round((resumedAt - stoppedAt) / 1000)} s (lease 3 s), then SIGCONT`,
      tasks: 1,
      lost: result.notTerminal.length,
      duplicates: result.duplicates.length,
      measured: {
        'handler runs': String(cluster.starts().get(task!.id) ?? 0),
        'late report': 'refused E_ASSIGNMENT_SUPERSEDED, dropped from the outbox',
      },
    });
  });
});

import { api, eventually } from '../helpers/hub';
import { CLEAN_EXIT, SH_RECORD_HANDLER } from '../helpers/processes';
import { percentile, recordReliability } from '../helpers/reliability';
import { expectExactlyOnce, FaultCluster, size } from './fault-cluster';

const ms = (n: number) => `${Math.round(n)} ms`;
/** The sidecars' handler: hundreds of runs, in sh rather than a node process each. */
const sidecarEnv = { AGENTCOM_EXEC: SH_RECORD_HANDLER };

jest.setTimeout(240_000);

describe('faults of a hub replica', () => {
  let cluster: FaultCluster;
  afterEach(async () => cluster?.stop());

  it('replica crash: kill -9 one of 3 replicas under load; its agents reconnect elsewhere and their tasks are not run again', async () => {
    const tasks = size(150, 500);
    const sidecars = size(9, 20);
    cluster = new FaultCluster({ LEASE_MS: '10000' });
    await cluster.start({ hubs: 3, sidecars, sidecarEnv });
    const load = cluster.submitAtRate(tasks, size(60, 100), { sleepMs: 150 });
    // the POSTs are paced but sequential: on a busy machine a third of them can take a while
    await eventually(() => (cluster.accepted.length >= tasks / 3 ? true : undefined), {
      what: 'a third of the load',
      timeoutMs: 90_000,
    });
    const before = await api<{
      agents: Array<{
        agentId: string;
        hubId?: string;
        state: string;
        currentTask?: { taskId: string };
      }>;
    }>(cluster.hubs[0]!.url, 'GET', '/v1/agents');
    const victims = before.body.agents.filter((a) => a.hubId === 'hub-2' && a.state !== 'offline');
    const inFlight = victims.flatMap((a) => (a.currentTask ? [a.currentTask.taskId] : []));
    const killedAt = Date.now();
    await cluster.hubs[1]!.kill('SIGKILL');
    await load;

    const result = await cluster.checkInvariants();
    expectExactlyOnce(result);
    const starts = cluster.starts();
    expect(inFlight.filter((id) => (starts.get(id) ?? 0) !== 1)).toEqual([]);

    const events = await cluster.events();
    const reconnects = victims.map((agent) => {
      const back = events.find(
        (e) =>
          e.agent === agent.agentId &&
          e.at >= killedAt &&
          (e.reason === 'connect' || e.reason === 'resume'),
      );
      return back ? back.at - killedAt : Number.POSITIVE_INFINITY;
    });
    expect(victims.length).toBeGreaterThan(0);
    expect(reconnects.every(Number.isFinite)).toBe(true);
    recordReliability({
      scenario: 'Replica crash',
      size: process.env.FULL === '1' ? 'full' : 'default',
      load: `${tasks} tasks at ${size(60, 100)}/s, 3 replicas, ${sidecars} sidecar processes`,
      faults: 'kill -9 of hub-2 after a third of the load',
      tasks: cluster.accepted.length,
      lost: result.notTerminal.length,
      duplicates: result.duplicates.length,
      measured: {
        'agents moved': String(victims.length),
        'in-flight tasks re-run': String(inFlight.filter((id) => (starts.get(id) ?? 0) > 1).length),
        'reconnect p50': ms(percentile(reconnects, 50)),
        'reconnect p99': ms(percentile(reconnects, 99)),
      },
    });
  });

  it('hung replica: SIGSTOP for a while, others keep dispatching, nothing is lost, it rejoins after SIGCONT', async () => {
    const stopMs = size(8000, 20_000);
    cluster = new FaultCluster({ LEASE_MS: '10000' });
    await cluster.start({ hubs: 3, sidecars: 6, sidecarEnv });
    await cluster.submitAtRate(30, 30, { sleepMs: 50 });
    const hung = cluster.hubs[1]!;
    hung.child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    const during: number[] = [];
    // tasks submitted to the live replicas while hub-2 is hung must still complete, and quickly
    for (let n = 0; n < 20; n++) {
      const live = [cluster.hubs[0]!, cluster.hubs[2]!][n % 2]!;
      const created = await api<{ id: string }>(live.url, 'POST', '/v1/tasks', {
        payload: { value: -1 - n },
      });
      expect(created.status).toBe(201);
      const t0 = Date.now();
      await eventually(
        async () =>
          (await api<{ state: string }>(live.url, 'GET', `/v1/tasks/${created.body.id}`)).body
            .state === 'completed'
            ? true
            : undefined,
        {
          what: 'a task while a replica hangs',
          timeoutMs: 20_000,
        },
      );
      during.push(Date.now() - t0);
    }
    const left = stopMs - (Date.now() - stoppedAt);
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left)); // the hang under test lasts stopMs
    hung.child.kill('SIGCONT');
    await cluster.submitAtRate(30, 30, { sleepMs: 50 });
    const result = await cluster.checkInvariants();
    expectExactlyOnce(result, { allCompleted: false });
    await cluster.waitIdle(6);
    // the woken replica serves again
    const ready = await fetch(`${hung.url}/readyz`);
    expect(ready.status).toBe(200);
    recordReliability({
      scenario: 'Hung replica',
      size: process.env.FULL === '1' ? 'full' : 'default',
      load: '3 replicas, 6 sidecars, 80 tasks',
      faults: `SIGSTOP of hub-2 for ${stopMs / 1000} s, then SIGCONT`,
      tasks: cluster.accepted.length + 20,
      lost: result.notTerminal.length,
      duplicates: result.duplicates.length,
      measured: {
        'task latency while hung p50': ms(percentile(during, 50)),
        'task latency while hung max': ms(Math.max(...during)),
      },
    });
    // the 20 tasks submitted directly are checked above (each completed)
  });

  it('rolling restart: SIGTERM each replica in turn under load; zero failed tasks, 503 while draining', async () => {
    cluster = new FaultCluster({ LEASE_MS: '10000', SHUTDOWN_DELAY_MS: '800' });
    await cluster.start({ hubs: 3, sidecars: 6, sidecarEnv });
    const load = cluster.submitAtRate(size(150, 600), 25, { sleepMs: 100 });
    const saw503: boolean[] = [];
    const moveTimes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const hub = cluster.hubs[i]!;
      const port = hub.port;
      hub.child.kill('SIGTERM');
      const t0 = Date.now();
      let seen = false;
      while (hub.running) {
        const status = await fetch(`${hub.url}/readyz`)
          .then((r) => r.status)
          .catch(() => 0);
        if (status === 503) seen = true;
        if (status === 0) break;
        await new Promise((resolve) => setTimeout(resolve, 50)); // sampling the readiness window
      }
      expect(await hub.exitReport()).toEqual(CLEAN_EXIT);
      saw503.push(seen);
      moveTimes.push(Date.now() - t0);
      await cluster.startHub(i + 1, port);
    }
    await load;
    const result = await cluster.checkInvariants();
    expect(saw503).toEqual([true, true, true]);
    expectExactlyOnce(result);
    recordReliability({
      scenario: 'Rolling restart',
      size: process.env.FULL === '1' ? 'full' : 'default',
      load: `${cluster.accepted.length} tasks at 25/s, 3 replicas, 6 sidecars`,
      faults: 'SIGTERM of each replica in turn, each restarted on its port',
      tasks: cluster.accepted.length,
      lost: result.notTerminal.length,
      duplicates: result.duplicates.length,
      measured: {
        'failed tasks': String(result.notCompleted.length),
        '503 seen while draining': saw503.every(Boolean) ? 'yes, 3/3' : 'no',
        'replica stop p50': ms(percentile(moveTimes, 50)),
      },
    });
  });
});

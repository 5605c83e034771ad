import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { completionsByTask, doubleHoldings, readTransitions } from '../helpers/invariants';
import {
  SH_RECORD_HANDLER,
  allStarted,
  mintToken,
  startHubProcess,
  startSidecarProcess,
  type TestProcess,
} from '../helpers/processes';
import type { RedisProcess } from '../helpers/redis-server';

/** Lines "<taskId> <attempt> <agent> <pid> start|done" written by the record handler. */
function runLog(file: string): Array<{ taskId: string; agent: string; what: string }> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [taskId = '', , agent = '', , what = ''] = line.split(' ');
      return { taskId, agent, what };
    });
}

jest.setTimeout(240_000);

describe('a cluster of hub and sidecar processes', () => {
  const cluster = useHubProcesses({ per: 'test', dirPrefix: 'agentcom-e2e-' });
  const { hubs, sidecars } = cluster;
  let redis: RedisProcess;
  let dir: string;
  let prefix: string;
  beforeEach(() => ({ redis, dir, prefix } = cluster));

  async function startSidecars(
    count: number,
    hubUrlsFor: (i: number) => string[],
    env: Record<string, string> = {},
  ) {
    const started: TestProcess[] = [];
    for (let i = 0; i < count; i++) {
      const agentId = `agent-${i}`;
      const token = await mintToken(hubs[0]!.url, agentId);
      const sidecar = startSidecarProcess({
        hubUrls: hubUrlsFor(i),
        agentId,
        token,
        stateDir: join(dir, agentId),
        env: { RUN_LOG: join(dir, 'run.log'), ...env },
      });
      sidecars.push(sidecar);
      started.push(sidecar);
    }
    await eventually(
      async () => {
        const listed = await api<{ agents: Array<{ state: string }> }>(
          hubs[0]!.url,
          'GET',
          '/v1/agents',
        );
        return listed.body.agents.filter((a) => a.state === 'idle').length >= count
          ? true
          : undefined;
      },
      { what: `${count} idle agents`, timeoutMs: 30_000 },
    );
    return started;
  }

  /** Starts the replicas side by side, into `hubs`. */
  const startHubs = (ids: string[]) =>
    allStarted(
      ids.map((id) => startHubProcess(redis.url, prefix, id)),
      hubs,
    );

  const getTask = async (hubUrl: string, id: string) =>
    (await api<TaskView>(hubUrl, 'GET', `/v1/tasks/${id}`)).body;

  it('runs 200 tasks over 3 replicas and 10 sidecars: each completed exactly once, no agent ever held two', async () => {
    await startHubs(['hub-1', 'hub-2', 'hub-3']);
    // 200 handler runs: the sh record handler, not a node process each
    await startSidecars(10, (i) => [hubs[i % 3]!.url], { AGENTCOM_EXEC: SH_RECORD_HANDLER });

    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: 200 }, async (_, n) => {
        const hub = hubs[n % 3]!;
        const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
          payload: { value: n, sleepMs: n % 7 },
        });
        expect(created.status).toBe(201);
        ids.push(created.body.id);
      }),
    );
    const tasks = await eventually(
      async () => {
        const views = await Promise.all(ids.map((id, n) => getTask(hubs[(n + 1) % 3]!.url, id)));
        return views.every((v) => v.state === 'completed') ? views : undefined;
      },
      { what: '200 tasks completed', timeoutMs: 90_000, intervalMs: 500 },
    );
    for (const task of tasks) {
      expect(task.result).toMatchObject({
        taskId: task.id,
        value: (task.payload as { value: number }).value,
      });
    }

    const events = await readTransitions(redis.url, prefix);
    const completions = completionsByTask(events);
    const missing = ids.filter((id) => !completions.has(id));
    if (missing.length)
      console.log(
        JSON.stringify(
          events.filter((e) => missing.includes(e.task)),
          null,
          1,
        ),
      );
    expect(completions.size).toBe(200);
    expect([...completions.values()].every((count) => count === 1)).toBe(true);
    expect(doubleHoldings(events)).toEqual([]);
    const tokens = await Promise.all(
      Array.from({ length: 10 }, (_, i) => readFile(join(dir, `agent-${i}`, 'token'), 'utf8')),
    );
    for (const proc of [...hubs, ...sidecars]) {
      expect(proc.output.length).toBeGreaterThan(0);
      for (const secret of [...tokens, TEST_ADMIN_KEY]) expect(proc.output).not.toContain(secret);
    }
    const done = runLog(join(dir, 'run.log')).filter((r) => r.what === 'done');
    expect(new Set(done.map((r) => r.taskId)).size).toBe(200);
    expect(done).toHaveLength(200);
  });

  it('runs the task of a kill -9ed sidecar on another agent after lease + stalled interval', async () => {
    await startHubs(['hub-1', 'hub-2']);
    const [victim] = await startSidecars(1, () => [hubs[0]!.url]);
    const created = await api<{ id: string }>(hubs[1]!.url, 'POST', '/v1/tasks', {
      payload: { sleepMs: 60_000, value: 'slow' },
    });
    const id = created.body.id;
    await eventually(
      async () =>
        runLog(join(dir, 'run.log')).some((r) => r.taskId === id && r.what === 'start')
          ? true
          : undefined,
      { what: 'the handler to start' },
    );
    expect((await getTask(hubs[0]!.url, id)).state).toBe('running');
    await victim!.kill('SIGKILL');
    const killedAt = Date.now();

    const token = await mintToken(hubs[0]!.url, 'rescuer');
    sidecars.push(
      startSidecarProcess({
        hubUrls: [hubs[1]!.url],
        agentId: 'rescuer',
        token,
        stateDir: join(dir, 'rescuer'),
        env: { RUN_LOG: join(dir, 'run.log') },
      }),
    );
    const rescued = await eventually(
      async () => {
        const task = await getTask(hubs[1]!.url, id);
        return task.state === 'running' && task.agentId === 'rescuer' ? task : undefined;
      },
      { what: 'the task to run on the rescuer', timeoutMs: 30_000 },
    );
    // lease 3 s + stalled interval 1 s (test timings): not before the lease ran out
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(2500);
    // still attempt 1, as its task:assign numbers it: a stall uses no attempt (BullMQ counts it in
    // the job's stalled counter, bounded by maxStalledCount), the run log shows both starts
    expect(rescued.attempt).toBe(1);
    const starts = await eventually(
      () => {
        const seen = runLog(join(dir, 'run.log')).filter(
          (r) => r.taskId === id && r.what === 'start',
        );
        return seen.length >= 2 ? seen : undefined;
      },
      { what: 'the rescuer handler to start' },
    );
    expect(starts.map((r) => r.agent)).toEqual(['agent-0', 'rescuer']);
  });
});

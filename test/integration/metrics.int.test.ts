import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import type { Hub } from '../../hub/src/hub';
import { TEST_ADMIN_KEY, api, eventually, startTestHub } from '../helpers/hub';
import { sumMetric } from '../helpers/metrics';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';

type TestHub = Hub & { url: string };

const scrape = async (hub: TestHub): Promise<string> => {
  const response = await fetch(`${hub.url}/metrics`, {
    headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
  });
  expect(response.status).toBe(200);
  return response.text();
};
const scrapeAll = (hubs: TestHub[]): Promise<string[]> => Promise.all(hubs.map(scrape));
const exportsClusterGauges = (text: string): boolean => text.includes('agentcom_agents{');

describe('metrics', () => {
  const fixture = useHubsFixture();
  const { hubs, agents } = fixture;

  /** `n` replicas sharing a fresh prefix (a cluster of their own). */
  const startHubs = async (n: number, env: Record<string, string> = {}): Promise<TestHub[]> => {
    const prefix = `m${randomBytes(3).toString('hex')}`;
    const started: TestHub[] = [];
    for (let i = 0; i < n; i++) {
      const hub = await startTestHub(fixture.redis.url, {
        AGENTCOM_PREFIX: prefix,
        HUB_ID: `hub-${i}-${prefix}`,
        ...env,
      });
      hubs.push(hub);
      started.push(hub);
    }
    return started;
  };
  const register = async (hub: TestHub, queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return agent;
  };
  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const taskIn = async (hub: TestHub, id: string, state: string): Promise<TaskView> =>
    eventually(
      async () => {
        const view = (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
        return view.state === state ? view : undefined;
      },
      { what: `task ${id} ${state}`, timeoutMs: 20_000 },
    );

  /**
   * Waits until the replicas together count one final outcome of the queue's task, then checks
   * that it is counted once, under `outcome` alone.
   */
  const expectCountedOnce = async (replicas: TestHub[], queue: string, outcome: string) => {
    const label = `queue="${queue}",outcome="${outcome}"`;
    await eventually(
      async () =>
        sumMetric(await scrapeAll(replicas), 'agentcom_tasks_failed_total', label) >= 1
          ? true
          : undefined,
      { what: `the ${outcome} task counted` },
    );
    const texts = await scrapeAll(replicas);
    expect(sumMetric(texts, 'agentcom_tasks_failed_total', label)).toBe(1);
    expect(sumMetric(texts, 'agentcom_tasks_failed_total', `queue="${queue}"`)).toBe(1);
  };

  it('counts a task failed for stalling too often once, on the replica that failed it', async () => {
    const [a, b] = await startHubs(2, {
      MAX_STALLED_COUNT: '0',
      LEASE_MS: '1000',
      ACK_TIMEOUT_MS: '500',
    });
    const queue = newQueue();
    const agent = await register(a!, queue);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(a!.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      attempts: 3,
    });
    await agent.accept(await assigned);
    agent.close();
    await register(b!, queue);
    const task = await taskIn(a!, created.body.id, 'failed');
    expect(task.error).toMatch(/stalled more than allowable limit/);
    await expectCountedOnce([a!, b!], queue, 'failed');
  });

  it('counts a running task cancelled after its agent vanished once, as cancelled', async () => {
    const [a, b] = await startHubs(2, { LEASE_MS: '1000', ACK_TIMEOUT_MS: '500' });
    const queue = newQueue();
    const agent = await register(a!, queue);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(a!.url, 'POST', '/v1/tasks', { queue, payload: {} });
    await agent.accept(await assigned);
    agent.close();
    const cancelled = await api<{ cancelRequested?: boolean }>(
      b!.url,
      'POST',
      `/v1/tasks/${created.body.id}/cancel`,
    );
    expect(cancelled.body.cancelRequested).toBe(true);
    // the stalled checker puts the task back to wait, where the next claim finds it cancelled
    const rescuer = await register(b!, queue);
    await taskIn(a!, created.body.id, 'cancelled');
    expect(rescuer.assignments).toHaveLength(0);
    await expectCountedOnce([a!, b!], queue, 'cancelled');
  });

  it("counts a failure once when its report's last step failed and the agent sent it again", async () => {
    const [a] = await startHubs(1);
    const queue = newQueue();
    const agent = await register(a!, queue);
    const assigned = agent.nextAssignment();
    await api(a!.url, 'POST', '/v1/tasks', { queue, payload: {}, attempts: 1 });
    const msg = await assigned;
    await agent.accept(msg);
    // the agent's release, after BullMQ failed the job, fails (Redis went away then)
    const store = a!.agents;
    const [transition, transitionThenClaim] = [store.transition, store.transitionThenClaim];
    let away = true;
    let refused = 0;
    const fails = (request: { reason: string }): void => {
      if (request.reason !== 'fail' || !away) return;
      refused++;
      throw new Error('Connection is closed.');
    };
    store.transition = async (request) => {
      fails(request);
      return transition.call(store, request);
    };
    store.transitionThenClaim = async (request, ...rest) => {
      fails(request);
      return transitionThenClaim.call(store, request, ...rest);
    };
    try {
      expect(await agent.fail(msg, { error: 'nope', retryable: false })).toMatchObject({
        ok: false,
      });
      expect(refused).toBeGreaterThan(0);
      away = false;
      // the sidecar sends an unanswered report again: BullMQ's part is done, a duplicate. It is
      // answered once the first report's lock has run out (5 s: that replica never released it)
      const again = await agent.socket.timeout(20_000).emitWithAck('task:fail', {
        taskId: msg.task.id,
        token: msg.token,
        error: 'nope',
        retryable: false,
      });
      expect(again).toEqual({ ok: true, duplicate: true });
    } finally {
      Object.assign(store, { transition, transitionThenClaim });
    }
    const label = `queue="${queue}",outcome="failed"`;
    expect(sumMetric([await scrape(a!)], 'agentcom_tasks_failed_total', label)).toBe(1);
  });

  it("observes a task's dispatch latency at its first push only, not again after an operator's retry", async () => {
    const [a] = await startHubs(1);
    const queue = newQueue();
    const agent = await register(a!, queue);
    let assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(a!.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      attempts: 1,
    });
    const first = await assigned;
    await agent.accept(first);
    await agent.fail(first, { error: 'nope', retryable: false });
    await taskIn(a!, created.body.id, 'failed');
    assigned = agent.nextAssignment(); // the push may arrive before the retry's answer
    expect((await api(a!.url, 'POST', `/v1/tasks/${created.body.id}/retry`)).status).toBe(200);
    const again = await assigned;
    expect(again).toMatchObject({ task: { id: created.body.id }, attempt: 1 });
    await agent.accept(again);
    expect(await agent.complete(again, 'second go')).toEqual({ ok: true });
    const text = await scrape(a!);
    expect(sumMetric([text], 'agentcom_tasks_completed_total', `queue="${queue}"`)).toBe(1);
    expect(sumMetric([text], 'agentcom_dispatch_latency_seconds_count', `queue="${queue}"`)).toBe(
      1,
    );
  });

  it('times the dispatch of a task pushed by the replica that added it below the millisecond, in sub-millisecond buckets', async () => {
    const [a] = await startHubs(1);
    const queue = newQueue();
    const agent = await register(a!, queue);
    await eventually(
      async () => ((await a!.redis.command.zcard(a!.keys.idle(queue))) === 1 ? true : undefined),
      { what: 'the agent idle' },
    );
    const assigned = agent.nextAssignment();
    const started = performance.now();
    expect((await api(a!.url, 'POST', '/v1/tasks', { queue, payload: {} })).status).toBe(201);
    await assigned;
    const windowSeconds = (performance.now() - started) / 1000;
    const lines = (await scrape(a!)).split('\n').filter((l) => l.includes(`queue="${queue}"`));
    const metric = (name: string) => sumMetric(lines, `agentcom_dispatch_latency_seconds_${name}`);
    expect(metric('count')).toBe(1);
    const latency = metric('sum');
    expect(latency).toBeGreaterThan(0);
    expect(latency).toBeLessThanOrEqual(windowSeconds);
    // finer than whole milliseconds (all BullMQ's job.timestamp and Date.now() could tell)
    const ms = latency * 1000;
    expect(Math.abs(ms - Math.round(ms))).toBeGreaterThan(1e-6);
    // every bucket counts the sample exactly when it is at most the bucket's bound
    const buckets = new Map(
      lines
        .filter((l) => l.startsWith('agentcom_dispatch_latency_seconds_bucket{'))
        .map((l) => [/le="([^"]+)"/.exec(l)![1]!, Number(l.slice(l.lastIndexOf(' ') + 1))]),
    );
    expect([...buckets.keys()].slice(0, 4)).toEqual(['0.0001', '0.00025', '0.0005', '0.001']);
    for (const [le, count] of buckets) {
      expect({ le, count }).toEqual({ le, count: le === '+Inf' || latency <= Number(le) ? 1 : 0 });
    }
  });

  it('has a dispatch latency bucket at each target, 2 ms (p50) and 10 ms (p99)', async () => {
    const [a] = await startHubs(1);
    const queue = newQueue();
    const agent = await register(a!, queue);
    const assigned = agent.nextAssignment();
    expect((await api(a!.url, 'POST', '/v1/tasks', { queue, payload: {} })).status).toBe(201);
    await assigned;
    const bounds = (await scrape(a!))
      .split('\n')
      .filter((l) => l.startsWith('agentcom_dispatch_latency_seconds_bucket{'))
      .filter((l) => l.includes(`queue="${queue}"`))
      .map((l) => /le="([^"]+)"/.exec(l)![1]!);
    // whether half the dispatches took at most 2 ms is then one ratio of two series, as is the
    // 99% within 10 ms; histogram_quantile would interpolate across a bucket spanning the target
    expect(bounds).toEqual(expect.arrayContaining(['0.002', '0.01']));
  });

  it('times batch-submitted tasks pushed by the replica that added them below the millisecond, as single ones', async () => {
    const [a] = await startHubs(1);
    const queue = newQueue();
    const size = 4;
    const batchAgents = await Promise.all(Array.from({ length: size }, () => register(a!, queue)));
    await eventually(
      async () => ((await a!.redis.command.zcard(a!.keys.idle(queue))) === size ? true : undefined),
      { what: 'the agents idle' },
    );
    const assigned = batchAgents.map((agent) => agent.nextAssignment());
    const started = performance.now();
    const tasks = Array.from({ length: size }, (_, i) => ({ queue, payload: { i } }));
    expect((await api(a!.url, 'POST', '/v1/tasks/batch', { tasks })).status).toBe(201);
    await Promise.all(assigned);
    const windowSeconds = (performance.now() - started) / 1000;
    const lines = (await scrape(a!)).split('\n').filter((l) => l.includes(`queue="${queue}"`));
    const metric = (name: string) => sumMetric(lines, `agentcom_dispatch_latency_seconds_${name}`);
    expect(metric('count')).toBe(size);
    const latency = metric('sum');
    expect(latency).toBeGreaterThan(0);
    expect(latency).toBeLessThanOrEqual(size * windowSeconds);
    // samples in whole milliseconds (BullMQ's job.timestamp: addBulk emits no `waiting` event)
    // would add up to whole milliseconds too
    const ms = latency * 1000;
    expect(Math.abs(ms - Math.round(ms))).toBeGreaterThan(1e-6);
  });

  it("reads each agent's state alone for the agents gauge, not its whole record", async () => {
    const [a] = await startHubs(1);
    const queue = newQueue();
    const connected = await Promise.all([register(a!, queue), register(a!, queue)]);
    // the agents a fleet has registered, offline now: each scrape of the leader counts them too
    const offline = 1500;
    const ids = Array.from({ length: offline }, (_, i) => `fleet-${i}-${queue}`);
    for (let i = 0; i < ids.length; i += 100) {
      await Promise.all(
        ids.slice(i, i + 100).map(async (agentId) => {
          expect((await api(a!.url, 'POST', '/v1/agents', { agentId })).status).toBe(201);
        }),
      );
    }
    await eventually(
      async () => ((await a!.redis.command.zcard(a!.keys.idle(queue))) === 2 ? true : undefined),
      { what: 'the connected agents idle' },
    );
    const sentByRedis = async () =>
      Number(/total_net_output_bytes:(\d+)/.exec(await a!.redis.command.info('stats'))![1]);
    const before = await sentByRedis();
    const text = await scrape(a!);
    const bytes = (await sentByRedis()) - before;
    expect(sumMetric([text], 'agentcom_agents', 'state="offline"')).toBe(offline);
    expect(sumMetric([text], 'agentcom_agents', 'state="idle"')).toBe(connected.length);
    // its id and its state: a whole record is several times as much, 7 MB per scrape at 10,000
    // agents of a working fleet (160 ms of the leader's event loop)
    expect(bytes / (offline + connected.length)).toBeLessThan(64);
  });

  it('keeps the cluster gauges on one live leader between sparse scrapes; another replica takes over once it closes', async () => {
    const ttlMs = 600;
    const [a, b] = await startHubs(2, { METRICS_LEADER_TTL_MS: String(ttlMs) });
    // whoever took the lease at start, the first replica to see it lapse would take it next
    const texts = await scrapeAll([a!, b!]);
    const leader = exportsClusterGauges(texts[0]!) ? a! : b!;
    const other = leader === a ? b! : a!;
    expect(texts.filter(exportsClusterGauges)).toHaveLength(1);
    // Prometheus scraping less often than the TTL: nothing renews the lease but the replicas
    for (let round = 0; round < 3; round++) {
      // a deliberate gap of two TTLs without a scrape: the property is that the lease does not
      // change hands meanwhile (only the replicas' own renewal keeps it)
      await new Promise((resolve) => setTimeout(resolve, 2 * ttlMs));
      expect(exportsClusterGauges(await scrape(other))).toBe(false);
      expect(exportsClusterGauges(await scrape(leader))).toBe(true);
    }
    await leader.close();
    hubs.splice(hubs.indexOf(leader), 1);
    await eventually(async () => (exportsClusterGauges(await scrape(other)) ? true : undefined), {
      what: 'the other replica to export the cluster gauges',
      timeoutMs: 3 * ttlMs,
    });
  });
});

describe('metrics while Redis is down', () => {
  let redis: RedisProcess;
  let hub: TestHub | undefined;
  let down = false;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    // a hub closes with Redis there (a failed test may leave it stopped)
    if (down) await redis.restart();
    await hub?.close();
    await redis.dispose();
  });

  it("answers /metrics with this replica's metrics, without the cluster gauges, while Redis is down", async () => {
    hub = await startTestHub(redis.url);
    const before = await scrape(hub);
    expect(exportsClusterGauges(before)).toBe(true);
    await redis.stop('SIGKILL');
    down = true;
    await eventually(() => (hub!.redis.command.status !== 'ready' ? true : undefined), {
      what: 'the hub to see Redis gone',
    });
    const started = Date.now();
    const during = await withTimeout(scrape(hub), 5000, '/metrics while Redis is down');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(during).toContain('agentcom_redis_errors_total');
    expect(during).toContain('agentcom_sockets');
    expect(during).toContain('agentcom_process_cpu_seconds_total');
    expect(exportsClusterGauges(during)).toBe(false);
    await redis.restart();
    down = false;
    await eventually(async () => (exportsClusterGauges(await scrape(hub!)) ? true : undefined), {
      what: 'the cluster gauges back with Redis',
    });
  });
});

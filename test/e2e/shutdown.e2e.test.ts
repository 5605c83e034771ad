import { randomBytes } from 'node:crypto';
import { Agent, get } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { Redis } from 'ioredis';
import { RedisKeys } from '../../hub/src/redis/keys';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { completionsByTask, doubleHoldings, readTransitions } from '../helpers/invariants';
import {
  CLEAN_EXIT,
  SH_RECORD_HANDLER,
  allStarted,
  mintToken,
  startHubProcess,
  startSidecarProcess,
} from '../helpers/processes';
import type { RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

jest.setTimeout(240_000);

describe('graceful stop of a hub replica under load', () => {
  const cluster = useHubProcesses({ per: 'describe', dirPrefix: 'agentcom-shutdown-' });
  const { hubs, sidecars } = cluster;
  let redis: RedisProcess;
  let dir: string;
  beforeAll(() => ({ redis, dir } = cluster));

  it('SIGTERM mid-load: /readyz 503 while it drains, sidecars move, exit 0, zero failed tasks', async () => {
    const prefix = `g${randomBytes(3).toString('hex')}`;
    const env = { SHUTDOWN_DELAY_MS: '1500', LEASE_MS: '10000' };
    await allStarted(
      [1, 2, 3].map((i) => startHubProcess(redis.url, prefix, `hub-${i}`, env)),
      hubs,
    );
    const urls = hubs.map((h) => h.url);
    for (let i = 0; i < 6; i++) {
      const agentId = `agent-${i}`;
      const rotated = [...urls.slice(i % 3), ...urls.slice(0, i % 3)];
      sidecars.push(
        startSidecarProcess({
          hubUrls: rotated,
          agentId,
          token: await mintToken(urls[0]!, agentId),
          stateDir: join(dir, agentId),
          env: {
            RUN_LOG: join(dir, 'run.log'),
            AGENTCOM_FAILOVER_ATTEMPTS: '1',
            AGENTCOM_EXEC: SH_RECORD_HANDLER, // 100 handler runs: sh, not a node process each
          },
        }),
      );
    }
    const ids: string[] = [];
    const submit = async (n: number) => {
      const hub = n % 2 === 0 ? hubs[0]! : hubs[2]!;
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: { value: n, sleepMs: 100 + (n % 5) * 40 },
      });
      expect(created.status).toBe(201);
      ids.push(created.body.id);
    };
    for (let n = 0; n < 60; n++) await submit(n);
    await eventually(
      async () => {
        const agents = await api<{ agents: Array<{ state: string; hubId?: string }> }>(
          hubs[0]!.url,
          'GET',
          '/v1/agents',
        );
        return agents.body.agents.some((a) => a.hubId === 'hub-2' && a.state === 'working')
          ? true
          : undefined;
      },
      { what: 'an agent of hub-2 at work' },
    );

    const victim = hubs[1]!;
    victim.child.kill('SIGTERM');
    const stoppedAt = Date.now();
    const readiness: number[] = [];
    while (victim.running && readiness.length < 200) {
      const status = await fetch(`${victim.url}/readyz`)
        .then((r) => r.status)
        .catch(() => 0);
      readiness.push(status);
      if (status === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50)); // sampling the readiness window
    }
    for (let n = 60; n < 100; n++) await submit(n);
    expect(await victim.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    expect(readiness).toContain(503);
    // the first sample may precede the signal's delivery; once draining, never ready again
    expect(readiness.slice(readiness.indexOf(503))).not.toContain(200);

    const views = await eventually(
      async () => {
        const all = await Promise.all(
          ids.map(async (id) => (await api<TaskView>(hubs[0]!.url, 'GET', `/v1/tasks/${id}`)).body),
        );
        return all.every((t) => t.state === 'completed' || t.state === 'failed') ? all : undefined;
      },
      { what: '100 tasks finished', timeoutMs: 60_000, intervalMs: 500 },
    );
    expect(views.filter((t) => t.state !== 'completed')).toEqual([]);
    expect(views.every((t) => t.attemptsMade === 1)).toBe(true);
    const events = await readTransitions(redis.url, prefix);
    expect(doubleHoldings(events)).toEqual([]);
    expect([...completionsByTask(events).values()].every((n) => n === 1)).toBe(true);
    const agents = await api<{ agents: Array<{ state: string; hubId?: string }> }>(
      hubs[0]!.url,
      'GET',
      '/v1/agents',
    );
    expect(
      agents.body.agents.filter((a) => a.state !== 'offline').every((a) => a.hubId !== 'hub-2'),
    ).toBe(true);
  });
  it('SIGTERM while HTTP clients keep their connections busy: responses say Connection: close, exit 0', async () => {
    // Node's server.close() leaves a keep-alive connection open while it has a request in
    // flight, and serves the next request on it: clients that never pause kept a replica from
    // ever closing (CI: exit 1 at the shutdown deadline in the rolling-restart fault test)
    const prefix = `k${randomBytes(3).toString('hex')}`;
    const hub = await startHubProcess(redis.url, prefix, 'keepalive-hub', {
      SHUTDOWN_DELAY_MS: '1000',
      SHUTDOWN_GRACE_MS: '3000', // a hung stop ends with exit 1 after 8 s
    });
    hubs.push(hub);
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 4 });
    const seen: Array<{ path: string; status: number; connection: string }> = [];
    const ask = (path: string): Promise<(typeof seen)[number] | undefined> =>
      new Promise((resolve) => {
        const headers = { authorization: `Bearer ${TEST_ADMIN_KEY}` };
        get(`${hub.url}${path}`, { agent: keepAlive, headers }, (res) => {
          res.resume();
          res.on('end', () =>
            resolve({
              path,
              status: res.statusCode ?? 0,
              connection: res.headers.connection ?? '',
            }),
          );
        }).on('error', () => resolve(undefined));
      });
    let signalled = false;
    let before = 0;
    const deadline = Date.now() + 20_000;
    // four clients, each with a request always on its way, until the replica stops answering
    const clients = Array.from({ length: 4 }, async () => {
      while (Date.now() < deadline) {
        // a request that waits on Redis, so one is in flight whenever the server looks
        const answer = (await ask('/v1/queues')) && (await ask('/readyz'));
        if (!answer) return;
        if (signalled) seen.push(answer);
        else before++;
      }
    });
    await eventually(() => (before >= 100 ? true : undefined), { what: 'clients under way' });
    signalled = true;
    hub.child.kill('SIGTERM');
    const stoppedAt = Date.now();
    const exited = await hub.exitReport();
    await Promise.all(clients);
    keepAlive.destroy();
    expect(exited).toEqual(CLEAN_EXIT);
    expect(Date.now() - stoppedAt).toBeLessThan(8000);
    // while it drained, every answer told the client to close its connection
    const draining = seen.filter((answer) => answer.path === '/readyz' && answer.status === 503);
    expect(draining.length).toBeGreaterThan(0);
    expect(draining.filter((answer) => answer.connection !== 'close')).toEqual([]);
  });
  it('SIGTERM with SHUTDOWN_DELAY_MS above SHUTDOWN_GRACE_MS + 5 s: the delay is kept, disconnects recorded, exit 0', async () => {
    // the exit deadline was SHUTDOWN_GRACE_MS + 5 s whatever the delay: exit 1 inside the delay,
    // the agent's record left naming a socket that died with the process
    const prefix = `d${randomBytes(3).toString('hex')}`;
    const delayMs = 6500;
    const hub = await startHubProcess(redis.url, prefix, 'long-delay-hub', {
      SHUTDOWN_DELAY_MS: String(delayMs),
      SHUTDOWN_GRACE_MS: '1000', // deadline 12.5 s; it was 6 s
    });
    hubs.push(hub);
    const agent = new TestAgent(
      hub.url,
      'agent-long-delay',
      await mintToken(hub.url, 'agent-long-delay'),
    );
    try {
      await agent.connect();
      const closed = agent.disconnected();
      hub.child.kill('SIGTERM');
      const stoppedAt = Date.now();
      await closed; // the replica closed the socket after the delay (or died)
      expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(delayMs - 100);
      expect(await hub.exitReport()).toEqual(CLEAN_EXIT);
    } finally {
      agent.close();
    }
    const reader = new Redis(redis.url);
    try {
      const record = await reader.hgetall(new RedisKeys(prefix).agent('agent-long-delay'));
      expect({ state: record.state, socketId: record.socketId }).toEqual({
        state: 'offline',
        socketId: undefined,
      });
    } finally {
      reader.disconnect();
    }
  });
  it('SIGTERM with a request that never finishes: its connection is cut after the bound, exit 0', async () => {
    const prefix = `c${randomBytes(3).toString('hex')}`;
    const hub = await startHubProcess(redis.url, prefix, 'stuck-request-hub', {
      SHUTDOWN_GRACE_MS: '3000', // the cut comes after 1.5 s; a hung stop ends with exit 1 after 8 s
    });
    hubs.push(hub);
    // a POST whose body never arrives keeps its connection busy: Node waits for it (300 s)
    const socket = connect(hub.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(
      'POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
        `Authorization: Bearer ${TEST_ADMIN_KEY}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"queue":',
    );
    // a request answered after the partial one was written: the replica has read its headers
    expect((await api(hub.url, 'GET', '/healthz')).status).toBe(200);
    hub.child.kill('SIGTERM');
    const stoppedAt = Date.now();
    expect(await hub.exitReport()).toEqual(CLEAN_EXIT);
    await closed;
    expect(socket.destroyed).toBe(true);
    expect(Date.now() - stoppedAt).toBeLessThan(8000);
  });
});

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { api, eventually } from '../helpers/hub';
import { completionsByTask, doubleHoldings, readTransitions } from '../helpers/invariants';
import {
  mintToken,
  startHubProcess,
  startSidecarProcess,
  type HubProcess,
  type TestProcess,
} from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(240_000);

describe('graceful stop of a hub replica under load', () => {
  let redis: RedisProcess;
  let dir: string;
  const hubs: HubProcess[] = [];
  const sidecars: TestProcess[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'agentcom-shutdown-'));
  });
  afterAll(async () => {
    await Promise.all(sidecars.map((s) => s.kill('SIGKILL')));
    await Promise.all(hubs.map((h) => h.kill('SIGKILL')));
    await redis.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('SIGTERM mid-load: /readyz 503 while it drains, sidecars move, exit 0, zero failed tasks', async () => {
    const prefix = `g${randomBytes(3).toString('hex')}`;
    const env = { SHUTDOWN_DELAY_MS: '1500', LEASE_MS: '10000' };
    for (let i = 1; i <= 3; i++)
      hubs.push(await startHubProcess(redis.url, prefix, `hub-${i}`, env));
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
          env: { RUN_LOG: join(dir, 'run.log'), AGENTCOM_FAILOVER_ATTEMPTS: '1' },
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
});

import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AGENT_NAMESPACE, PROTOCOL_VERSION, type TaskView } from '@agentcom/shared';
import { Redis } from 'ioredis';
import { io } from 'socket.io-client';
import { parse } from 'yaml';
import { RedisKeys } from '../../hub/src/redis/keys';
import { FAST_TIMINGS, api, eventually } from '../helpers/hub';
import { completionsByTask, doubleHoldings, readTransitions } from '../helpers/invariants';
import { ROOT, startSidecarProcess, type TestProcess } from '../helpers/processes';
import { clusterScriptEnv } from '../helpers/cluster-script';

const run = promisify(execFile);

/** `make cluster` as users run it (scripts/cluster.mjs), on free loopback ports, through HAProxy. */
jest.setTimeout(240_000);

describe('make cluster: hubs behind a real HAProxy', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let state: {
    adminKey: string;
    lbUrl: string;
    statsUrl: string;
    redisUrl: string;
    hubs: Array<{ name: string; url: string }>;
  };
  const sidecars: TestProcess[] = [];

  const cluster = (...args: string[]) =>
    run(process.execPath, [join(ROOT, 'scripts', 'cluster.mjs'), ...args], { env, cwd: ROOT });
  const lbApi = <T>(method: string, path: string, body?: unknown) =>
    api<T>(state.lbUrl, method, path, body, { authorization: `Bearer ${state.adminKey}` });
  const serverStatus = async (name: string): Promise<string> => {
    const csv = await (await fetch(`${state.statsUrl};csv`)).text();
    const row = csv.split('\n').find((line) => line.startsWith(`be_hub,${name},`));
    return row?.split(',')[17] ?? 'missing';
  };
  const pidOf = (name: string): number =>
    Number(
      readFileSync(join(dir, 'pids'), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith(`${name} `))
        .at(-1)
        ?.split(' ')[1],
    );

  beforeAll(async () => {
    ({ dir, env } = await clusterScriptEnv('agentcom-cluster-', {
      CLUSTER_HUB_ENV: JSON.stringify({ ...FAST_TIMINGS, LEASE_MS: '8000' }),
    }));
    // hub ports are consecutive from the base: make sure the next two are free too
    const { stdout } = await cluster('up', '3');
    expect(stdout).toContain('load balancer');
    state = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as typeof state;
  });
  afterAll(async () => {
    await Promise.all(sidecars.map((s) => s.kill('SIGKILL')));
    if (dir) {
      const { stdout } = await cluster('down');
      expect(stdout).toMatch(/stopped .*hub1.*haproxy|stopped redis/);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  type AgentRow = { agentId: string; state: string; hubId?: string };
  async function startAgents(names: string[]): Promise<AgentRow[]> {
    for (const agentId of names) {
      const created = await lbApi<{ token: string }>('POST', '/v1/agents', { agentId });
      sidecars.push(
        startSidecarProcess({
          hubUrls: [state.lbUrl],
          agentId,
          token: created.body.token,
          stateDir: join(dir, 'agents', agentId),
          env: { RUN_LOG: join(dir, 'run.log') },
        }),
      );
    }
    return eventually(
      async () => {
        const listed = await lbApi<{ agents: AgentRow[] }>('GET', '/v1/agents');
        const mine = listed.body.agents.filter(
          (a) => names.includes(a.agentId) && a.state === 'idle',
        );
        return mine.length === names.length ? mine : undefined;
      },
      { what: 'agents idle through the load balancer', timeoutMs: 30_000 },
    );
  }

  it('spreads agents, survives kill -9 of a replica (marked down through /readyz), and uses it again once back', async () => {
    const first = Array.from({ length: 6 }, (_, i) => `lb-agent-${i}`);
    await startAgents(first);
    const spread = await lbApi<{ agents: Array<{ hubId?: string }> }>('GET', '/v1/agents');
    expect(new Set(spread.body.agents.map((a) => a.hubId)).size).toBe(3);

    const ids: string[] = [];
    for (let n = 0; n < 60; n++) {
      const created = await lbApi<{ id: string }>('POST', '/v1/tasks', {
        payload: { value: n, sleepMs: 100 + (n % 4) * 50 },
      });
      expect(created.status).toBe(201);
      ids.push(created.body.id);
    }
    process.kill(pidOf('hub2'), 'SIGKILL');
    await eventually(
      async () => ((await serverStatus('hub2')).startsWith('DOWN') ? true : undefined),
      {
        what: 'HAProxy to mark hub2 down',
      },
    );
    for (let n = 60; n < 80; n++) {
      const created = await lbApi<{ id: string }>('POST', '/v1/tasks', { payload: { value: n } });
      expect(created.status).toBe(201);
      ids.push(created.body.id);
    }
    const views = await eventually(
      async () => {
        const all = await Promise.all(
          ids.map(async (id) => (await lbApi<TaskView>('GET', `/v1/tasks/${id}`)).body),
        );
        return all.every((t) => t.state === 'completed') ? all : undefined;
      },
      { what: '80 tasks completed', timeoutMs: 60_000, intervalMs: 500 },
    );
    expect(views).toHaveLength(80);
    const events = await readTransitions(state.redisUrl, 'agentcom');
    expect(doubleHoldings(events)).toEqual([]);
    const completions = completionsByTask(events);
    expect(ids.every((id) => completions.get(id) === 1)).toBe(true);
    await eventually(
      async () => {
        const listed = await lbApi<{
          agents: Array<{ agentId: string; state: string; hubId?: string }>;
        }>('GET', '/v1/agents');
        const back = listed.body.agents.filter(
          (a) => first.includes(a.agentId) && a.state === 'idle',
        );
        return back.length === 6 && back.every((a) => a.hubId !== 'hub2') ? true : undefined;
      },
      { what: 'all agents reconnected to the surviving replicas', timeoutMs: 30_000 },
    );

    await cluster('start-hub', '2');
    await eventually(
      async () => ((await serverStatus('hub2')).startsWith('UP') ? true : undefined),
      { what: 'hub2 up again' },
    );
    const later = ['lb-agent-late-0', 'lb-agent-late-1', 'lb-agent-late-2'];
    const agents = await startAgents(later);
    expect(agents.some((a) => a.hubId === 'hub2')).toBe(true);
  });

  it("starts its hubs with compose's stop settings", () => {
    const compose = parse(readFileSync(join(ROOT, 'docker', 'compose.yaml'), 'utf8'), {
      merge: true,
    }) as { services: Record<string, { environment: Record<string, string> }> };
    const composeEnv = compose.services.hub1!.environment;
    for (const hub of state.hubs) {
      // the environment the running hub process was given by scripts/cluster.mjs
      const environ = readFileSync(`/proc/${pidOf(hub.name)}/environ`, 'utf8').split('\0');
      const value = (key: string) =>
        environ.find((entry) => entry.startsWith(`${key}=`))?.slice(key.length + 1);
      for (const key of ['SHUTDOWN_DELAY_MS', 'TRUST_PROXY']) {
        expect({ hub: hub.name, key, value: value(key) }).toEqual({
          hub: hub.name,
          key,
          value: composeEnv[key],
        });
      }
    }
  });

  it('a Redis freeze shorter than the lease, every replica marked down meanwhile, disconnects no agent', async () => {
    // every replica's /readyz turns 503 while Redis does not answer, and HAProxy marks them all
    // down; with `on-marked-down shutdown-sessions` it then cut every agent's websocket
    const live = sidecars.filter((s) => s.running);
    expect(live.length).toBeGreaterThanOrEqual(6);
    const outputFrom = live.map((s) => s.output.length);
    const redisPid = pidOf('redis');
    const frozenAt = Date.now();
    process.kill(redisPid, 'SIGSTOP');
    let frozeForMs: number;
    try {
      await eventually(
        async () => {
          const statuses = await Promise.all(state.hubs.map((hub) => serverStatus(hub.name)));
          return statuses.every((status) => status.startsWith('DOWN')) ? true : undefined;
        },
        { what: 'HAProxy to mark every replica down', timeoutMs: 7000, intervalMs: 100 },
      );
    } finally {
      process.kill(redisPid, 'SIGCONT');
      frozeForMs = Date.now() - frozenAt;
    }
    expect(frozeForMs).toBeLessThan(8000); // LEASE_MS of this cluster
    await eventually(
      async () => {
        const statuses = await Promise.all(state.hubs.map((hub) => serverStatus(hub.name)));
        return statuses.every((status) => status === 'UP') ? true : undefined;
      },
      { what: 'every replica up again', timeoutMs: 15_000, intervalMs: 200 },
    );
    const dropped = live
      .filter((s, i) => s.output.slice(outputFrom[i]).includes('disconnected from the hub'))
      .map((s) => s.name);
    expect(dropped).toEqual([]);
    const since = (await readTransitions(state.redisUrl, 'agentcom')).filter(
      (event) => Number(event.id.split('-')[0]) >= frozenAt,
    );
    expect(since.filter((event) => /connect|replica_gone/.test(event.reason))).toEqual([]);
  });

  it('counts failed handshakes under the address HAProxy saw, not one the client put in X-Forwarded-For', async () => {
    const refused = await new Promise<string>((resolve) => {
      const socket = io(`${state.lbUrl}${AGENT_NAMESPACE}`, {
        transports: ['websocket'],
        reconnection: false,
        extraHeaders: { 'x-forwarded-for': '198.51.100.77' },
        auth: {
          agentId: 'lb-agent-0',
          token: 'agc_wrong',
          protocol: PROTOCOL_VERSION,
          queues: ['default'],
          sidecarVersion: 't',
        },
      });
      socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
        socket.disconnect();
        resolve(err.data?.code ?? err.message);
      });
    });
    expect(refused).toBe('E_UNAUTHORIZED');
    const keys = new RedisKeys('agentcom');
    const redis = new Redis(state.redisUrl);
    try {
      expect(await redis.exists(keys.authFailures('127.0.0.1'))).toBe(1);
      expect(await redis.exists(keys.authFailures('198.51.100.77'))).toBe(0);
    } finally {
      redis.disconnect();
    }
  });
});

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_NAMESPACE, PROTOCOL_VERSION, type AgentView, type TaskView } from '@agentcom/shared';
import { Redis } from 'ioredis';
import { io, type ManagerOptions, type SocketOptions } from 'socket.io-client';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { readTransitions } from '../helpers/invariants';
import {
  RECORD_HANDLER,
  SIDECAR_CLI,
  mintToken,
  startHubProcess,
  startSidecarProcess,
  type HubProcess,
  type TestProcess,
} from '../helpers/processes';
import type { RedisProcess } from '../helpers/redis-server';
import { recordReliability } from '../helpers/reliability';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { FULL } from './fault-cluster';

/**
 * Scenario 8, security: fencing between agents, token revocation across replicas, the handshake
 * rate limit, the admin key on every protected surface, secrets kept out of logs, and the
 * sidecar's refusal of a token file others can read. Two hub processes share one redis-server.
 */

const AUTH_FAIL_LIMIT = 5;
const ENV_DUMP_HANDLER = join(__dirname, 'env-dump-handler.mjs');
/** Each test that fails handshakes on purpose does it from its own loopback address. */
const REVOKED_ADDRESS = '127.0.0.21';
const LIMITED_ADDRESS = '127.0.0.31';
const OTHER_ADDRESS = '127.0.0.32';
const LOGS_ADDRESS = '127.0.0.41';

interface Captured {
  name: string;
  text: () => string;
}

/** Everything a process wrote, from its start (TestProcess keeps only a tail). */
function capture(proc: TestProcess): Captured {
  let text = proc.output;
  const keep = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
  };
  proc.child.stdout?.on('data', keep);
  proc.child.stderr?.on('data', keep);
  return { name: proc.name, text: () => text };
}

/** One handshake with its own connection: 'connected', or the connect_error's `data.code`. */
async function handshake(
  url: string,
  auth: Record<string, unknown>,
  localAddress?: string,
): Promise<string> {
  const options: Partial<ManagerOptions & SocketOptions> & { localAddress?: string } = {
    forceNew: true,
    reconnection: false,
    transports: ['websocket'],
    auth,
    ...(localAddress ? { localAddress } : {}),
  };
  const client = io(`${url}${AGENT_NAMESPACE}`, options);
  try {
    return await withTimeout(
      new Promise<string>((resolve) => {
        client.once('connect', () => resolve('connected'));
        client.once('connect_error', (err: Error & { data?: { code?: unknown } }) =>
          resolve(
            typeof err.data?.code === 'string' ? err.data.code : `connect_error: ${err.message}`,
          ),
        );
      }),
      10_000,
      'handshake',
    );
  } finally {
    client.close();
  }
}

const agentAuth = (agentId: string, token: string, queues = ['sec']): Record<string, unknown> => ({
  agentId,
  token,
  protocol: PROTOCOL_VERSION,
  queues,
  sidecarVersion: '0.0.0-security',
});

/** Sends any event name (an agent has no cancel event: the hub must refuse it). */
function sendLoose(agent: TestAgent, event: string, payload: unknown): Promise<unknown> {
  const socket = agent.socket as unknown as {
    timeout(ms: number): { emitWithAck(event: string, payload: unknown): Promise<unknown> };
  };
  return socket.timeout(5000).emitWithAck(event, payload);
}

/** Runs a command to its end, killed after `timeoutMs` (a sidecar that does not refuse would run on). */
async function runBounded(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  const child = spawn(process.execPath, args, {
    env: { ...process.env, AGENTCOM_TOKEN: '', AGENTCOM_TOKEN_FILE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr, timedOut };
}

jest.setTimeout(240_000);

describe('security (fault scenario 8)', () => {
  let redisClient: Redis;
  const outputs: Captured[] = [];
  const agents: TestAgent[] = [];
  /** Every secret that must never reach a log: label → value. */
  const secrets = new Map<string, string>([['admin key', TEST_ADMIN_KEY]]);
  const measured: Record<string, string> = {};
  let tasks = 0;
  const cluster = useHubProcesses({
    per: 'describe',
    dirPrefix: 'agentcom-security-',
    beforeKill: () => {
      recordReliability({
        scenario: 'Security',
        size: FULL ? 'full' : 'default',
        load: `2 replicas (AUTH_FAIL_LIMIT=${AUTH_FAIL_LIMIT}, LOG_LEVEL=debug), 2 sidecar processes, protocol-level agents`,
        faults:
          "replayed foreign {taskId, token}, 'task:cancel' from an agent, revoked token, bad-token handshakes, missing/wrong admin key, token file readable by others",
        tasks,
        lost: 0,
        duplicates: 0,
        measured,
      });
      for (const agent of agents) agent.close();
      redisClient?.disconnect();
    },
  });
  const { hubs, sidecars } = cluster;
  let redis: RedisProcess;
  let prefix: string;
  let dir: string;

  const hub1 = (): HubProcess => hubs[0]!;
  const hub2 = (): HubProcess => hubs[1]!;
  const register = async (
    hub: HubProcess,
    agentId: string,
    queues: string[],
  ): Promise<TestAgent> => {
    const agent = await TestAgent.register(hub.url, agentId, queues);
    agents.push(agent);
    secrets.set(`token of ${agentId}`, agent.token);
    return agent;
  };

  beforeAll(async () => {
    ({ redis, prefix, dir } = cluster);
    redisClient = new Redis(redis.url);
    for (const i of [1, 2]) {
      const hub = await startHubProcess(redis.url, prefix, `hub-${i}`, {
        AUTH_FAIL_LIMIT: String(AUTH_FAIL_LIMIT),
        LOG_LEVEL: 'debug',
      });
      hubs.push(hub);
      outputs.push(capture(hub));
    }
  }, 60_000);

  it("agent A cannot accept, report, extend or log agent B's task with B's {taskId, token}; B's task is unaffected", async () => {
    const a = await register(hub1(), 'sec-a', ['sec-a-q']);
    const b = await register(hub2(), 'sec-b', ['sec-b-q']);
    // listen first: the push may arrive before the POST's 201 does
    const assigned = b.nextAssignment();
    const created = await api<{ id: string }>(hub1().url, 'POST', '/v1/tasks', {
      queue: 'sec-b-q',
      payload: { for: 'B' },
    });
    expect(created.status).toBe(201);
    tasks++;
    const assignment = await assigned;
    const ref = { taskId: assignment.task.id, token: assignment.token };
    expect(ref.taskId).toBe(created.body.id);

    /** What A tried, and whether the hub refused it the way it must. */
    const attempts: Array<{ what: string; ack: unknown; refused: boolean }> = [];
    const as = async (
      what: string,
      event: string,
      payload: unknown,
      refusal: Record<string, unknown>,
    ): Promise<void> => {
      const ack = await sendLoose(a, event, payload).catch((err: unknown) => String(err));
      const refused =
        typeof ack === 'object' &&
        ack !== null &&
        Object.entries(refusal).every(([k, v]) => (ack as Record<string, unknown>)[k] === v);
      attempts.push({ what, ack, refused });
    };
    const superseded = { ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' };

    // before B accepted: A cannot take the assignment
    await as('accept before B', 'task:accept', ref, superseded);
    expect(await b.accept(assignment)).toMatchObject({ ok: true, state: 'working' });

    // while B works on it: nothing A sends with B's id and token is taken
    await as('accept', 'task:accept', ref, superseded);
    await as('progress', 'task:progress', { ...ref, progress: 99, message: 'from A' }, superseded);
    await as('log', 'task:log', { ...ref, lines: ['written by A'] }, superseded);
    await as(
      'fail',
      'task:fail',
      { ...ref, error: 'A says it failed', retryable: false },
      superseded,
    );
    await as(
      'fail (rate limited)',
      'task:fail',
      {
        ...ref,
        error: 'A says rate limited',
        retryable: true,
        rateLimitedUntil: Date.now() + 60_000,
      },
      superseded,
    );
    await as('complete', 'task:complete', { ...ref, result: { by: 'A' } }, superseded);
    await as('heartbeat (extend)', 'agent:heartbeat', ref, { ok: true, abort: true });
    // cancel is admin-only (HTTP): an agent has no cancel event
    const validation = { ok: false, code: 'E_VALIDATION' };
    await as(
      'task:cancel event',
      'task:cancel',
      { taskId: ref.taskId, reason: 'cancelled' },
      validation,
    );
    await as('task:cancel event with the token', 'task:cancel', { ...ref }, validation);

    // B's task is untouched: still B's, running, no progress or log line from A
    const during = (await api<TaskView>(hub2().url, 'GET', `/v1/tasks/${ref.taskId}`)).body;
    expect(during).toMatchObject({ state: 'running', agentId: 'sec-b', attemptsMade: 0 });
    expect(during.progress ?? null).toBeNull();
    const logsDuring = await api<{ logs: string[] }>(
      hub1().url,
      'GET',
      `/v1/tasks/${ref.taskId}/logs`,
    );
    expect(logsDuring.body.logs).toEqual([]);
    const viewA = (await api<AgentView>(hub1().url, 'GET', '/v1/agents/sec-a')).body;
    expect(viewA).toMatchObject({ state: 'idle', tasksDone: 0, tasksFailed: 0 });
    expect(viewA.currentTask).toBeUndefined();
    const viewB = (await api<AgentView>(hub1().url, 'GET', '/v1/agents/sec-b')).body;
    expect(viewB).toMatchObject({ state: 'working', currentTask: { taskId: ref.taskId } });

    // B finishes it normally
    expect(await b.send('task:progress', { ...ref, progress: 50 })).toMatchObject({ ok: true });
    expect(await b.send('task:log', { ...ref, lines: ['written by B'] })).toMatchObject({
      ok: true,
    });
    const completed = await b.complete(assignment, { by: 'B' });
    expect(completed).toMatchObject({ ok: true });
    expect((completed as { duplicate?: boolean }).duplicate).toBeUndefined();
    const done = (await api<TaskView>(hub1().url, 'GET', `/v1/tasks/${ref.taskId}`)).body;
    expect(done).toMatchObject({ state: 'completed', agentId: 'sec-b', result: { by: 'B' } });
    const logs = await api<{ logs: string[] }>(hub2().url, 'GET', `/v1/tasks/${ref.taskId}/logs`);
    expect(logs.body.logs).toEqual(['written by B']);

    // B's finished report is not A's to replay: superseded, not acknowledged as a duplicate
    await as(
      'complete after B completed',
      'task:complete',
      { ...ref, result: { by: 'A' } },
      superseded,
    );
    await as(
      'fail after B completed',
      'task:fail',
      { ...ref, error: 'late', retryable: false },
      superseded,
    );
    const after = (await api<TaskView>(hub2().url, 'GET', `/v1/tasks/${ref.taskId}`)).body;
    expect(after).toMatchObject({ state: 'completed', agentId: 'sec-b', result: { by: 'B' } });
    expect((await api<AgentView>(hub1().url, 'GET', '/v1/agents/sec-a')).body).toMatchObject({
      state: 'idle',
      tasksDone: 0,
      tasksFailed: 0,
    });
    // no transition of A ever named B's task
    const events = await readTransitions(redis.url, prefix);
    expect(events.filter((e) => e.agent === 'sec-a' && e.task === ref.taskId)).toEqual([]);
    expect(
      events.filter((e) => e.agent === 'sec-b' && e.task === ref.taskId).map((e) => e.reason),
    ).toEqual(['assign', 'accept', 'complete']);

    measured['foreign reports refused'] =
      `${attempts.filter((t) => t.refused).length}/${attempts.length} (A with B's taskId and token)`;
    expect(
      attempts.map(({ what, ack, refused }) =>
        refused ? `${what}: refused` : `${what}: NOT refused, answered ${JSON.stringify(ack)}`,
      ),
    ).toEqual(attempts.map(({ what }) => `${what}: refused`));
  }, 60_000);

  it('a revoked token (DELETE on replica 1) disconnects its agent on replica 2 within 1 s; reconnecting is refused E_UNAUTHORIZED', async () => {
    const victim = await register(hub2(), 'sec-revoked', ['sec-v-q']);
    const hubError = new Promise<unknown>((resolve) => victim.socket.once('hub:error', resolve));
    const disconnected = new Promise<number>((resolve) =>
      victim.socket.once('disconnect', () => resolve(Date.now())),
    );
    const revokedAt = Date.now();
    const revoked = await api(hub1().url, 'DELETE', '/v1/agents/sec-revoked');
    expect(revoked).toMatchObject({ status: 200, body: { agentId: 'sec-revoked', revoked: true } });
    const gone = await withTimeout(disconnected, 5000, 'disconnect after the revocation');
    const delay = gone - revokedAt;
    measured['revocation delay'] = `${delay} ms (DELETE on hub-1 → disconnect on hub-2)`;
    expect(delay).toBeLessThan(1000);
    expect(await withTimeout(hubError, 1000, 'hub:error')).toMatchObject({
      code: 'E_UNAUTHORIZED',
    });

    for (const hub of hubs) {
      expect(
        await handshake(
          hub.url,
          agentAuth('sec-revoked', victim.token, ['sec-v-q']),
          REVOKED_ADDRESS,
        ),
      ).toBe('E_UNAUTHORIZED');
    }
    await eventually(
      async () =>
        (await api<AgentView>(hub1().url, 'GET', '/v1/agents/sec-revoked')).body.state === 'offline'
          ? true
          : undefined,
      { what: 'the revoked agent recorded offline', timeoutMs: 5000 },
    );
  }, 60_000);

  it(`repeated bad tokens from one address are rate-limited cluster-wide: after ${AUTH_FAIL_LIMIT}, even the right token gets E_RATE_LIMITED on every replica`, async () => {
    const token = await mintToken(hub1().url, 'sec-limited');
    secrets.set('token of sec-limited', token);
    const answers: string[] = [];
    // bad tokens, alternating replicas: the count is kept in Redis, not per replica
    for (let i = 0; i < 4 * AUTH_FAIL_LIMIT; i++) {
      const wrong = `agc_${randomBytes(32).toString('base64url')}`;
      secrets.set(`presented wrong token ${i}`, wrong);
      const answer = await handshake(
        hubs[i % hubs.length]!.url,
        agentAuth('sec-limited', wrong),
        LIMITED_ADDRESS,
      );
      answers.push(answer);
      if (answer === 'E_RATE_LIMITED') break;
    }
    const threshold = answers.filter((a) => a === 'E_UNAUTHORIZED').length;
    measured['rate-limit threshold'] =
      `${threshold} refused handshakes per address, then E_RATE_LIMITED (AUTH_FAIL_LIMIT=${AUTH_FAIL_LIMIT})`;
    expect(answers).toEqual([
      ...Array.from({ length: AUTH_FAIL_LIMIT }, () => 'E_UNAUTHORIZED'),
      'E_RATE_LIMITED',
    ]);

    // the right token from that address: refused too, on every replica
    const rightToken: string[] = [];
    for (const hub of hubs) {
      rightToken.push(await handshake(hub.url, agentAuth('sec-limited', token), LIMITED_ADDRESS));
    }
    expect(rightToken).toEqual(hubs.map(() => 'E_RATE_LIMITED'));
    measured['rate limit on'] = `${rightToken.length}/${hubs.length} replicas`;
    const ttl = await redisClient.pttl(`{${prefix}}:auth-fail:${LIMITED_ADDRESS}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);

    // per address: the same agent still gets in from elsewhere
    expect(await handshake(hub2().url, agentAuth('sec-limited', token), OTHER_ADDRESS)).toBe(
      'connected',
    );
  }, 60_000);

  it('the admin API, Bull Board, the agents page and /metrics refuse a missing or wrong admin key with 401', async () => {
    const protectedRoutes: Array<[string, string]> = [
      ['GET', '/v1/tasks'],
      ['POST', '/v1/tasks'],
      ['GET', '/v1/tasks/t1'],
      ['GET', '/v1/tasks/t1/logs'],
      ['POST', '/v1/tasks/t1/cancel'],
      ['POST', '/v1/tasks/t1/retry'],
      ['GET', '/v1/agents'],
      ['POST', '/v1/agents'],
      ['GET', '/v1/agents/sec-a'],
      ['DELETE', '/v1/agents/sec-a'],
      ['POST', '/v1/agents/sec-a/drain'],
      ['POST', '/v1/agents/sec-a/resume'],
      ['GET', '/v1/queues'],
      ['GET', '/metrics'],
      ['GET', '/admin/queues'],
      ['GET', '/admin/queues/api/queues'],
      ['GET', '/'],
      ['GET', '/ui/socket.io.min.js'],
    ];
    const basic = (text: string): string => `Basic ${Buffer.from(text).toString('base64')}`;
    const credentials: Array<[string, Record<string, string>]> = [
      ['no Authorization', {}],
      ['wrong bearer', { authorization: 'Bearer wrong-admin-key-0123456789' }],
      [
        'bearer of the key minus a char',
        { authorization: `Bearer ${TEST_ADMIN_KEY.slice(0, -1)}` },
      ],
      ['bearer of the key plus a char', { authorization: `Bearer ${TEST_ADMIN_KEY}x` }],
      ['empty bearer', { authorization: 'Bearer ' }],
      ['basic, wrong password', { authorization: basic('admin:wrong') }],
      ['basic, key as user name', { authorization: basic(`${TEST_ADMIN_KEY}:`) }],
      ['basic, no colon', { authorization: basic(TEST_ADMIN_KEY) }],
      ['other scheme', { authorization: `Token ${TEST_ADMIN_KEY}` }],
      ['key without scheme', { authorization: TEST_ADMIN_KEY }],
      ['an agent token', { authorization: `Bearer ${secrets.get('token of sec-a') ?? 'agc_x'}` }],
    ];
    const wrong: string[] = [];
    let checked = 0;
    for (const hub of hubs) {
      for (const [method, path] of protectedRoutes) {
        for (const [label, headers] of credentials) {
          const response = await fetch(`${hub.url}${path}`, { method, headers });
          const text = await response.text();
          checked++;
          let code: unknown;
          try {
            code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
          } catch {
            code = undefined;
          }
          if (response.status !== 401 || code !== 'E_UNAUTHORIZED') {
            wrong.push(
              `${hub.hubId} ${method} ${path} (${label}): ${response.status} ${text.slice(0, 80)}`,
            );
          }
          if (
            (path === '/' || path.startsWith('/admin/queues')) &&
            !/^Basic /.test(response.headers.get('www-authenticate') ?? '')
          ) {
            wrong.push(`${hub.hubId} ${method} ${path} (${label}): no Basic challenge`);
          }
        }
      }
    }
    expect(wrong).toEqual([]);
    measured['admin surfaces refused'] = `${checked} requests, 401 each`;

    // the same routes answer with the key: the 401s came from the key check, not a missing route
    for (const path of [
      '/v1/tasks',
      '/v1/agents',
      '/v1/queues',
      '/metrics',
      '/admin/queues',
      '/',
    ]) {
      const response = await fetch(`${hub1().url}${path}`, {
        headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
      });
      expect(`${path} ${response.status}`).toBe(`${path} 200`);
    }
    const basicOk = await fetch(`${hub2().url}/admin/queues`, {
      headers: { authorization: basic(`admin:${TEST_ADMIN_KEY}`) },
    });
    expect(basicOk.status).toBe(200);

    // the agents page's live channel wants a UI session, not nothing and not the admin key
    for (const auth of [{}, { session: 'forged' }, { session: TEST_ADMIN_KEY }]) {
      const client = io(`${hub1().url}/ui`, {
        forceNew: true,
        reconnection: false,
        transports: ['websocket'],
        auth,
      });
      const answer = await withTimeout(
        new Promise<string>((resolve) => {
          client.once('connect', () => resolve('connected'));
          client.once('connect_error', (err: Error & { data?: { code?: unknown } }) =>
            resolve(String(err.data?.code)),
          );
        }),
        10_000,
        '/ui handshake',
      );
      client.close();
      expect(answer).toBe('E_UNAUTHORIZED');
    }
  }, 120_000);

  it('tokens never appear in logs: hub processes at debug and real sidecars through tasks, every line grepped', async () => {
    const queue = 'sec-logs';
    for (const [i, agentId] of ['sec-s1', 'sec-s2'].entries()) {
      const token = await mintToken(hubs[i]!.url, agentId);
      secrets.set(`token of ${agentId}`, token);
      const sidecar = startSidecarProcess({
        hubUrls: i === 0 ? [hub1().url, hub2().url] : [hub2().url, hub1().url],
        agentId,
        token,
        stateDir: join(dir, agentId),
        queues: [queue],
        exec: `${process.execPath} ${ENV_DUMP_HANDLER}`,
        env: { LOG_LEVEL: 'debug', AGENTCOM_FAILOVER_ATTEMPTS: '1' },
      });
      sidecars.push(sidecar);
      outputs.push(capture(sidecar));
    }
    await eventually(
      async () => {
        const listed = await api<{ agents: AgentView[] }>(hub1().url, 'GET', '/v1/agents');
        const idle = listed.body.agents.filter(
          (a) => ['sec-s1', 'sec-s2'].includes(a.agentId) && a.state === 'idle',
        );
        return idle.length === 2 ? true : undefined;
      },
      { what: 'both sidecars idle', timeoutMs: 30_000 },
    );

    const ids: string[] = [];
    for (let n = 0; n < 6; n++) {
      const created = await api<{ id: string }>(hubs[n % 2]!.url, 'POST', '/v1/tasks', {
        queue,
        payload: { n },
      });
      expect(created.status).toBe(201);
      ids.push(created.body.id);
      tasks++;
    }
    const finished = await eventually(
      async () => {
        const views = await Promise.all(
          ids.map(async (id) => (await api<TaskView>(hub1().url, 'GET', `/v1/tasks/${id}`)).body),
        );
        return views.every((v) => v.state === 'completed') ? views : undefined;
      },
      { what: 'the six tasks completed', timeoutMs: 60_000 },
    );
    // the handler never saw the agent token: it got its task id and assignment token, not the token
    for (const view of finished) {
      const vars = (view.result as { vars?: string[] }).vars ?? [];
      expect(vars).toEqual(expect.arrayContaining(['AGENTCOM_TASK_ID', 'AGENTCOM_TASK_TOKEN']));
      expect(vars).not.toContain('AGENTCOM_TOKEN');
      expect(vars).not.toContain('AGENTCOM_TOKEN_FILE');
    }

    // failure paths log too: a wrong token presented to each replica, then a drain on SIGTERM
    for (const hub of hubs) {
      const wrong = `agc_${randomBytes(32).toString('base64url')}`;
      secrets.set(`presented wrong token on ${hub.hubId}`, wrong);
      expect(await handshake(hub.url, agentAuth('sec-s1', wrong, [queue]), LOGS_ADDRESS)).toBe(
        'E_UNAUTHORIZED',
      );
    }
    for (const sidecar of sidecars) sidecar.child.kill('SIGTERM');
    const exits = await Promise.all(
      sidecars.map((s) => withTimeout(s.exited, 20_000, 'sidecar exit')),
    );
    expect(exits).toEqual(sidecars.map(() => ({ code: 0, signal: null })));

    // every line of every process, every secret
    const taskLogs = await Promise.all(
      ids.map(
        async (id) =>
          (await api<{ logs: string[] }>(hub1().url, 'GET', `/v1/tasks/${id}/logs`)).body.logs,
      ),
    );
    const sources: Array<[string, string]> = [
      ...outputs.map((o): [string, string] => [o.name, o.text()]),
      ['task logs', taskLogs.flat().join('\n')],
    ];
    let lines = 0;
    const leaks: string[] = [];
    for (const [name, text] of sources) {
      const all = text.split('\n');
      lines += all.length;
      for (const [label, secret] of secrets) {
        const hits = all.filter((line) => line.includes(secret));
        if (hits.length > 0)
          leaks.push(`${label} in ${name} (${hits.length} lines): ${hits[0]!.slice(0, 160)}`);
      }
    }
    measured['logs grepped'] =
      `${lines} lines from ${outputs.length} processes + task logs, ${secrets.size} secrets, ${leaks.length} leaks`;
    // the grep saw real logs: every process wrote, the hubs logged the sidecars' connections
    for (const output of outputs)
      expect(`${output.name}: ${output.text().length > 0}`).toBe(`${output.name}: true`);
    for (const hub of outputs.slice(0, 2)) expect(hub.text()).toMatch(/"agentId":"sec-s[12]"/);
    expect(taskLogs.flat().some((line) => line.startsWith('env AGENTCOM_TASK_ID='))).toBe(true);
    expect(leaks).toEqual([]);

    // and no agent token is stored in Redis as such (only its SHA-256)
    const stored: string[] = [];
    let cursor = '0';
    for (let round = 0; round < 10_000; round++) {
      const [next, keys] = await redisClient.scan(cursor, 'COUNT', 500);
      for (const key of keys) {
        const type = await redisClient.type(key);
        const content =
          type === 'string'
            ? ((await redisClient.get(key)) ?? '')
            : type === 'hash'
              ? JSON.stringify(await redisClient.hgetall(key))
              : type === 'stream'
                ? JSON.stringify(await redisClient.xrange(key, '-', '+'))
                : '';
        for (const [label, secret] of secrets) {
          if (label !== 'admin key' && (content.includes(secret) || key.includes(secret))) {
            stored.push(`${label} in ${key}`);
          }
        }
      }
      cursor = next;
      if (cursor === '0') break;
    }
    expect(stored).toEqual([]);
  }, 180_000);

  it('the sidecar refuses a token file that group or others can read: exit code 2, one line naming --token-file', async () => {
    const token = await mintToken(hub1().url, 'sec-perm');
    secrets.set('token of sec-perm', token);
    const results: string[] = [];
    for (const mode of [0o644, 0o640, 0o604, 0o666]) {
      const file = join(dir, `token-${mode.toString(8)}`);
      writeFileSync(file, token);
      chmodSync(file, mode);
      const run = await runBounded(
        [
          SIDECAR_CLI,
          'run',
          '--hub',
          hub1().url,
          '--agent',
          'sec-perm',
          '--token-file',
          file,
          '--queue',
          'sec-perm-q',
          '--exec',
          `${process.execPath} ${RECORD_HANDLER}`,
          '--state-dir',
          join(dir, 'perm-state'),
        ],
        15_000,
      );
      const errLines = run.stderr.trim().split('\n').filter(Boolean);
      results.push(
        `${mode.toString(8)}: exit ${run.code}${run.timedOut ? ' (still running, killed)' : ''}, ` +
          `${errLines.length} line(s), names --token-file: ${errLines.some((l) => l.includes('--token-file'))}, ` +
          `shows the token: ${(run.stdout + run.stderr).includes(token)}`,
      );
    }
    measured['token file readable by others'] = results.map((r) => r.split(',')[0]).join('; ');
    expect(results).toEqual(
      ['644', '640', '604', '666'].map(
        (mode) => `${mode}: exit 2, 1 line(s), names --token-file: true, shows the token: false`,
      ),
    );
    // it never connected with that token
    const view = (await api<AgentView>(hub1().url, 'GET', '/v1/agents/sec-perm')).body;
    expect(view.state).toBe('offline');
    expect(view.connectedAt).toBeUndefined();
  }, 90_000);
});

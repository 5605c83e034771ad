import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { CREDENTIAL_VARIABLES } from '../../sidecar/src/runner/task-environment';
import { isProcessGone } from '../../sidecar/src/test-support/process';
import { api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { completionsByTask, readTransitions } from '../helpers/invariants';
import {
  ROOT,
  mintToken,
  runSidecarCli,
  startHubProcess,
  startSidecarProcess,
  type HubProcess,
} from '../helpers/processes';
import type { RedisProcess } from '../helpers/redis-server';

const STUBBORN = join(ROOT, 'test', 'fixtures', 'stubborn-handler.mjs');
/** Prints the AGENTCOM_* variables it was given and completes with their names (`vars`). */
const ENV_DUMP = join(ROOT, 'test', 'faults', 'env-dump-handler.mjs');

/**
 * "<handler pid> <grandchild pid>" as the stubborn handler writes it, or undefined until both are
 * there (a pid of 0 must never come out of here: the cleanup would signal the test's own group).
 */
function readPidsFile(path: string): number[] | undefined {
  if (!existsSync(path)) return undefined;
  const pids = readFileSync(path, 'utf8').trim().split(' ').map(Number);
  return pids.length === 2 && pids.every((pid) => Number.isInteger(pid) && pid > 0)
    ? pids
    : undefined;
}
const WAKE = join(ROOT, 'test', 'fixtures', 'wake-recorder.mjs');

jest.setTimeout(240_000);

describe('the sidecar process against real hub processes', () => {
  const cluster = useHubProcesses({ per: 'test', dirPrefix: 'agentcom-sidecar-e2e-' });
  const { hubs, sidecars } = cluster;
  let redis: RedisProcess;
  let dir: string;
  let prefix: string;
  beforeEach(() => ({ redis, dir, prefix } = cluster));

  const getTask = async (hub: HubProcess, id: string) =>
    (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
  const agentState = async (hub: HubProcess, agentId: string) =>
    (await api<{ state: string }>(hub.url, 'GET', `/v1/agents/${agentId}`)).body.state;
  const waitAgentState = (hub: HubProcess, agentId: string, state: string, timeoutMs = 15_000) =>
    eventually(async () => ((await agentState(hub, agentId)) === state ? true : undefined), {
      what: `${agentId} ${state}`,
      timeoutMs,
    });
  const waitTaskState = (
    hub: HubProcess,
    id: string,
    state: TaskView['state'],
    timeoutMs = 20_000,
  ) =>
    eventually(
      async () => {
        const task = await getTask(hub, id);
        return task.state === state ? task : undefined;
      },
      { what: `task ${state}`, timeoutMs },
    );
  async function sidecar(
    hub: HubProcess,
    agentId: string,
    options: { exec?: string; env?: Record<string, string> } = {},
  ) {
    const token = await mintToken(hub.url, agentId);
    const proc = startSidecarProcess({
      hubUrls: [hub.url],
      agentId,
      token,
      stateDir: join(dir, agentId),
      env: { RUN_LOG: join(dir, 'run.log'), ...options.env },
      ...(options.exec ? { exec: options.exec } : {}),
    });
    sidecars.push(proc);
    return proc;
  }

  it('cancels a running task whose handler ignores SIGTERM: the process group is gone within grace + 1 s', async () => {
    hubs.push(
      await startHubProcess(redis.url, prefix, 'hub-1'),
      await startHubProcess(redis.url, prefix, 'hub-2'),
    );
    const pidsFile = join(dir, 'pids');
    await sidecar(hubs[0]!, 'stubborn', {
      exec: `${process.execPath} ${STUBBORN}`,
      env: { PIDS_FILE: pidsFile, AGENTCOM_KILL_GRACE_MS: '1000' },
    });
    await waitAgentState(hubs[0]!, 'stubborn', 'idle');
    const created = await api<{ id: string }>(hubs[1]!.url, 'POST', '/v1/tasks', {
      payload: {},
      attempts: 3,
    });
    const pids = await eventually(() => readPidsFile(pidsFile), {
      what: 'the handler and its grandchild to run',
    });
    expect(pids).toHaveLength(2);
    const cancelledAt = Date.now();
    const response = await api(hubs[1]!.url, 'POST', `/v1/tasks/${created.body.id}/cancel`);
    expect(response.status).toBe(202);
    await eventually(() => (pids.every(isProcessGone) ? true : undefined), {
      what: 'the process group to die',
      intervalMs: 20,
    });
    expect(Date.now() - cancelledAt).toBeLessThanOrEqual(1000 + 1000);
    const task = await waitTaskState(hubs[0]!, created.body.id, 'cancelled');
    expect(task.attemptsMade).toBe(1);
    await waitAgentState(hubs[1]!, 'stubborn', 'idle');
  });

  it('stops a task cancelled while its sidecar had no connection, once the sidecar resumes it: the task ends cancelled', async () => {
    const slowLease = { LEASE_MS: '30000', STALLED_INTERVAL_MS: '5000' };
    const hub1 = await startHubProcess(redis.url, prefix, 'hub-1', slowLease);
    const hub2 = await startHubProcess(redis.url, prefix, 'hub-2', slowLease);
    hubs.push(hub1, hub2);
    const pidsFile = join(dir, 'pids');
    const proc = await sidecar(hub1, 'resumer', {
      exec: `${process.execPath} ${STUBBORN}`,
      env: { PIDS_FILE: pidsFile, AGENTCOM_KILL_GRACE_MS: '500' },
    });
    await waitAgentState(hub1, 'resumer', 'idle');
    const created = await api<{ id: string }>(hub2.url, 'POST', '/v1/tasks', {
      payload: {},
      attempts: 3,
    });
    const pids = await eventually(() => readPidsFile(pidsFile), {
      what: 'the handler and its grandchild to run',
    });
    try {
      await waitAgentState(hub2, 'resumer', 'working');
      // the sidecar's only replica is gone: the task:cancel reaches nobody
      await hub1.kill('SIGKILL');
      const response = await api(hub2.url, 'POST', `/v1/tasks/${created.body.id}/cancel`);
      expect(response).toMatchObject({ status: 202, body: { cancelRequested: true } });
      expect(pids.some(isProcessGone)).toBe(false);

      // back on the same address within the lease: the sidecar reconnects and resumes its task
      const hub1b = await startHubProcess(redis.url, prefix, 'hub-1b', slowLease, hub1.port);
      hubs.push(hub1b);
      const task = await waitTaskState(hub2, created.body.id, 'cancelled', 30_000);
      expect(task.attemptsMade).toBe(1);
      expect(pids.map(isProcessGone)).toEqual([true, true]);
      expect(proc.output).toContain('the hub cancelled the task');
      await waitAgentState(hub2, 'resumer', 'idle');
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });

  it('delivers a result produced while the hub was down, even across a kill -9 of the sidecar: completed exactly once', async () => {
    const slowLease = { LEASE_MS: '30000', STALLED_INTERVAL_MS: '5000' };
    const hub = await startHubProcess(redis.url, prefix, 'hub-1', slowLease);
    hubs.push(hub);
    const proc = await sidecar(hub, 'survivor');
    await waitAgentState(hub, 'survivor', 'idle');
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { sleepMs: 1500, value: 'kept' },
    });
    const id = created.body.id;
    const runLog = join(dir, 'run.log');
    await eventually(
      () => (readFileSync(runLog, 'utf8').includes(`${id} 1 survivor`) ? true : undefined),
      { what: 'the handler to start' },
    );
    await hub.kill('SIGKILL');
    const stateFile = join(dir, 'survivor', 'state.json');
    await eventually(
      () => {
        const state = JSON.parse(readFileSync(stateFile, 'utf8')) as {
          outbox?: Array<{ taskId: string }>;
        };
        return state.outbox?.some((r) => r.taskId === id) ? true : undefined;
      },
      { what: 'the result to reach the outbox' },
    );
    await proc.kill('SIGKILL');
    const restartedHub = await startHubProcess(redis.url, prefix, 'hub-1b', slowLease, hub.port);
    hubs.push(restartedHub);
    sidecars.push(
      startSidecarProcess({
        hubUrls: [restartedHub.url],
        agentId: 'survivor',
        token: readFileSync(join(dir, 'survivor', 'token'), 'utf8'),
        stateDir: join(dir, 'survivor'),
        env: { RUN_LOG: runLog },
      }),
    );
    const task = await waitTaskState(restartedHub, id, 'completed');
    expect(task.result).toMatchObject({ taskId: id, value: 'kept' });
    const done = readFileSync(runLog, 'utf8')
      .split('\n')
      .filter((line) => line.startsWith(`${id} `) && line.endsWith(' done'));
    expect(done).toHaveLength(1);
    const completions = completionsByTask(await readTransitions(redis.url, prefix));
    expect(completions.get(id)).toBe(1);
  });

  it('after a kill -9 mid-task, the restarted sidecar stops the orphaned handler group before the task is retried', async () => {
    const hub = await startHubProcess(redis.url, prefix, 'hub-1');
    hubs.push(hub);
    const pidsFile = join(dir, 'pids');
    // Both the handler and its grandchild ignore SIGTERM: only SIGKILL after the grace stops them.
    const options = {
      exec: `${process.execPath} ${STUBBORN}`,
      env: { PIDS_FILE: pidsFile, AGENTCOM_KILL_GRACE_MS: '500' },
    };
    const first = await sidecar(hub, 'crasher', options);
    await waitAgentState(hub, 'crasher', 'idle');
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: {},
      attempts: 3,
    });
    const id = created.body.id;
    const readPids = (): number[] | undefined => readPidsFile(pidsFile);
    const orphans = await eventually(readPids, { what: 'the handler and its grandchild to run' });
    const seen = new Set(orphans);
    try {
      expect(orphans).toHaveLength(2);
      const stateFile = join(dir, 'crasher', 'state.json');
      await eventually(
        () => (readFileSync(stateFile, 'utf8').includes(`"pid":${orphans[0]}`) ? true : undefined),
        { what: 'the state file to record the handler' },
      );

      await first.kill('SIGKILL');
      expect(orphans.some(isProcessGone)).toBe(false);

      const second = await sidecar(hub, 'crasher', options);
      // The retry runs the handler again on this agent (the only one): new pids in the file.
      const retried = await eventually(
        () => {
          const pids = readPids();
          return pids !== undefined && pids[0] !== orphans[0] ? pids : undefined;
        },
        { what: 'the task to be retried', intervalMs: 20 },
      );
      retried.forEach((pid) => seen.add(pid));
      expect(orphans.map(isProcessGone)).toEqual([true, true]);
      expect((await getTask(hub, id)).attempt).toBe(2);
      expect(second.output).toContain(`"pid":${orphans[0]}`);
      expect(second.output).toMatch(/"outcome":"killed".*SIGKILL after the grace/);
    } finally {
      for (const pid of seen) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  });

  it('on SIGTERM finishes the running task, delivers its result and exits 0; started again, it takes tasks', async () => {
    const hub = await startHubProcess(redis.url, prefix, 'hub-1');
    hubs.push(hub);
    const proc = await sidecar(hub, 'drainer');
    await waitAgentState(hub, 'drainer', 'idle');
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { sleepMs: 1500, value: 'drained' },
    });
    await waitTaskState(hub, created.body.id, 'running');
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    const task = await getTask(hub, created.body.id);
    expect(task).toMatchObject({ state: 'completed', result: { value: 'drained' } });
    // the drain it asked for on SIGTERM ended with it (pm2 or systemd restart it like this)
    await sidecar(hub, 'drainer');
    await waitAgentState(hub, 'drainer', 'idle');
    const next = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { value: 'after the restart' },
    });
    await waitTaskState(hub, next.body.id, 'completed');
  });

  it('on SIGTERM while its hub restarts, delivers the result the task produced meanwhile before it exits', async () => {
    const slowLease = { LEASE_MS: '30000', STALLED_INTERVAL_MS: '5000' };
    const hub = await startHubProcess(redis.url, prefix, 'hub-1', slowLease);
    hubs.push(hub);
    const proc = await sidecar(hub, 'stopper');
    await waitAgentState(hub, 'stopper', 'idle');
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { sleepMs: 1500, value: 'kept' },
    });
    await waitTaskState(hub, created.body.id, 'running');
    proc.child.kill('SIGTERM');
    await eventually(() => (proc.output.includes('"msg":"draining') ? true : undefined), {
      what: 'the drain to start',
    });
    await hub.kill('SIGKILL');
    // the task ends while no hub answers: the sidecar, stopping, waits for one (or exits at once)
    await eventually(
      () =>
        !proc.running || proc.output.includes('waiting for a connection to deliver')
          ? true
          : undefined,
      { what: 'the drain to wait for a connection, or the sidecar to exit' },
    );
    expect(proc.running).toBe(true);
    const restarted = await startHubProcess(redis.url, prefix, 'hub-1b', slowLease, hub.port);
    hubs.push(restarted);
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    const state = JSON.parse(readFileSync(join(dir, 'stopper', 'state.json'), 'utf8')) as unknown;
    expect(state).toMatchObject({ outbox: [] });
    expect(await getTask(restarted, created.body.id)).toMatchObject({
      state: 'completed',
      attemptsMade: 1,
      result: { value: 'kept' },
    });
  });

  it('hands the handler none of the credentials of its environment: no agent token, no admin key', async () => {
    const hub = await startHubProcess(redis.url, prefix, 'hub-1');
    hubs.push(hub);
    // An operator who ran `agentcom task add` from this shell has the admin key exported.
    const adminKey = `admin-${randomBytes(16).toString('hex')}`;
    await sidecar(hub, 'guarded', {
      exec: `${process.execPath} ${ENV_DUMP}`,
      env: { AGENTCOM_ADMIN_KEY: adminKey, AGENTCOM_ADMIN_KEY_FILE: join(dir, 'admin-key') },
    });
    await waitAgentState(hub, 'guarded', 'idle');
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { payload: {} });
    const task = await waitTaskState(hub, created.body.id, 'completed');
    const vars = (task.result as { vars: string[] }).vars;
    expect(vars).toEqual(expect.arrayContaining(['AGENTCOM_TASK_ID', 'AGENTCOM_AGENT']));
    for (const secret of CREDENTIAL_VARIABLES) expect(vars).not.toContain(secret);
  });

  it('sends the labels of its --label flags in the handshake: GET /v1/agents/:id shows them', async () => {
    const hub = await startHubProcess(redis.url, prefix, 'hub-1');
    hubs.push(hub);
    sidecars.push(
      startSidecarProcess({
        hubUrls: [hub.url],
        agentId: 'labelled',
        token: await mintToken(hub.url, 'labelled'),
        stateDir: join(dir, 'labelled'),
        args: ['--label', 'gpu=a100', '--label', 'zone=eu-1'],
      }),
    );
    await waitAgentState(hub, 'labelled', 'idle');
    const agent = await api<{ labels: Record<string, string> }>(
      hub.url,
      'GET',
      '/v1/agents/labelled',
    );
    expect(agent.body.labels).toEqual({ gpu: 'a100', zone: 'eu-1' });
  });

  it('starts with a corrupt state file: moves it aside with a clear log line and serves tasks', async () => {
    const hub = await startHubProcess(redis.url, prefix, 'hub-1');
    hubs.push(hub);
    mkdirSync(join(dir, 'mended'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'mended', 'state.json'), '{"outbox": [ this is not json', {
      mode: 0o600,
    });
    const proc = await sidecar(hub, 'mended');
    await waitAgentState(hub, 'mended', 'idle');
    const moved = readdirSync(join(dir, 'mended')).filter((f) =>
      f.startsWith('state.json.corrupt-'),
    );
    expect(moved).toHaveLength(1);
    expect(readFileSync(join(dir, 'mended', moved[0]!), 'utf8')).toContain('this is not json');
    expect(proc.output).toMatch(/corrupt/i);
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { value: 1 },
    });
    await waitTaskState(hub, created.body.id, 'completed');
  });

  describe('wake mode', () => {
    it('wakes the agent with the task file, and completes the task with what `agentcom-sidecar done` reports', async () => {
      const hub = await startHubProcess(redis.url, prefix, 'hub-1');
      hubs.push(hub);
      const wakeLog = join(dir, 'wake.log');
      const token = await mintToken(hub.url, 'sleeper');
      sidecars.push(
        startSidecarProcess({
          hubUrls: [hub.url],
          agentId: 'sleeper',
          token,
          stateDir: join(dir, 'sleeper'),
          env: {
            AGENTCOM_EXEC: '',
            AGENTCOM_WAKE: `${process.execPath} ${WAKE}`,
            WAKE_LOG: wakeLog,
          },
        }),
      );
      await waitAgentState(hub, 'sleeper', 'idle');
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: { ask: 'fix the bug' },
      });
      const wake = await eventually(
        () =>
          existsSync(wakeLog)
            ? (JSON.parse(readFileSync(wakeLog, 'utf8').split('\n')[0]!) as Record<string, unknown>)
            : undefined,
        { what: 'the wake command to run' },
      );
      expect(wake).toMatchObject({
        taskId: created.body.id,
        present: true,
        task: { id: created.body.id, payload: { ask: 'fix the bug' } },
      });
      expect((await getTask(hub, created.body.id)).state).toBe('running');
      const done = await runSidecarCli(
        ['done', '--result', '-'],
        { AGENTCOM_STATE_DIR: join(dir, 'sleeper') },
        '{"fixed": true}',
      );
      expect(done.code).toBe(0);
      const task = await waitTaskState(hub, created.body.id, 'completed');
      expect(task.result).toEqual({ fixed: true });
      expect(existsSync(join(dir, 'sleeper', 'current.json'))).toBe(false);
      await waitAgentState(hub, 'sleeper', 'idle');
    });

    it('`fail --retry-after 2` cools the agent down and gives the task to another agent without using an attempt', async () => {
      const hub = await startHubProcess(redis.url, prefix, 'hub-1');
      hubs.push(hub);
      const token = await mintToken(hub.url, 'limited');
      sidecars.push(
        startSidecarProcess({
          hubUrls: [hub.url],
          agentId: 'limited',
          token,
          stateDir: join(dir, 'limited'),
          env: {
            AGENTCOM_EXEC: '',
            AGENTCOM_WAKE: `${process.execPath} ${WAKE}`,
            WAKE_LOG: join(dir, 'wake.log'),
          },
        }),
      );
      await waitAgentState(hub, 'limited', 'idle');
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: { value: 'quota' },
        attempts: 1,
      });
      await waitTaskState(hub, created.body.id, 'running');
      const failed = await runSidecarCli(
        ['fail', '--reason', 'model quota', '--retry-after', '2'],
        {
          AGENTCOM_STATE_DIR: join(dir, 'limited'),
        },
      );
      expect(failed.code).toBe(0);
      const cooledAt = Date.now();
      await waitAgentState(hub, 'limited', 'cooldown', 5000);
      expect((await getTask(hub, created.body.id)).attemptsMade).toBe(0);
      await sidecar(hub, 'helper');
      const task = await waitTaskState(hub, created.body.id, 'completed');
      expect(task).toMatchObject({ agentId: 'helper', attempts: 1, result: { value: 'quota' } });
      await waitAgentState(hub, 'limited', 'idle', 10_000);
      expect(Date.now() - cooledAt).toBeGreaterThanOrEqual(1500);
    });
  });
});

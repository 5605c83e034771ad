import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  AgentView,
  CreateTaskResponse,
  TaskAssign,
  TaskCancel,
  TaskView,
} from '@agentcom/shared';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { RedisKeys } from '../../hub/src/redis/keys';
import { TEST_ADMIN_KEY, api } from '../helpers/hub';
import { ROOT, startHubProcess, type HubProcess } from '../helpers/processes';
import { freePort, startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';

/**
 * `agentcom`, the operator CLI, as users run it: the esbuild bundle (built by sidecar/build.mjs,
 * next to the sidecar's) started as child processes against a real hub process and a real
 * redis-server. Agents are protocol-level TestAgents driven by the task payload.
 */

/** What a TestAgent does with a task: the payload says. */
interface Script {
  action: 'complete' | 'fail' | 'hang';
  result?: unknown;
  lines?: string[];
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface CliRun {
  child: ChildProcess;
  exited: Promise<CliResult>;
}

jest.setTimeout(240_000);

describe('agentcom (operator CLI) against a real hub process', () => {
  let dir: string;
  let bundle: string;
  let redis: RedisProcess;
  let hub: HubProcess;
  /** The hub's key prefix. */
  let prefix: string;
  const children: ChildProcess[] = [];
  const agents: TestAgent[] = [];
  /** Failures inside the agents' handlers, checked after each test. */
  const agentErrors: unknown[] = [];
  /** The agents' handlers still running: a test may end before a report's ack came back. */
  const serving = new Set<Promise<void>>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agentcom-operator-cli-'));
    bundle = await buildOperatorBundle(dir);
    redis = await startRedis();
    prefix = `c${randomBytes(3).toString('hex')}`;
    hub = await startHubProcess(redis.url, prefix, 'hub-cli');
  });
  afterEach(async () => {
    // closing an agent with a report in flight would fail that report ('socket has been
    // disconnected'): let the handlers end first (a task left hanging ends with its agent)
    await withTimeout(Promise.all(serving), 10_000, 'the agents to finish their tasks').catch(
      () => undefined,
    );
    for (const agent of agents.splice(0)) agent.close();
    expect(agentErrors.splice(0)).toEqual([]);
  });
  afterAll(async () => {
    await Promise.all(
      children.splice(0).map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGKILL');
        await once(child, 'exit');
      }),
    );
    await hub?.kill('SIGKILL');
    await redis?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const newAgentId = () => `agent-${randomBytes(4).toString('hex')}`;

  /** Starts `agentcom ...args` with the hub's URL and key in its environment (`null` removes one). */
  function start(
    args: string[],
    options: { env?: Record<string, string | null>; stdin?: string } = {},
  ): CliRun {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      AGENTCOM_URL: hub.url,
      AGENTCOM_ADMIN_KEY: TEST_ADMIN_KEY,
    };
    for (const [key, value] of Object.entries(options.env ?? {})) {
      if (value === null) delete env[key];
      else env[key] = value;
    }
    const child = spawn(process.execPath, [bundle, ...args], {
      env,
      stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    if (options.stdin !== undefined) child.stdin?.end(options.stdin);
    const exited = new Promise<CliResult>((resolve) =>
      child.once('close', (code: number | null) => resolve({ code, stdout, stderr })),
    );
    return { child, exited };
  }

  const cli = (
    args: string[],
    options: { env?: Record<string, string | null>; stdin?: string } = {},
  ) => start(args, options).exited;

  /**
   * A TestAgent with a token minted by the CLI, serving `queue` as each payload's script says,
   * once the hub has recorded its connection: tests list or drain it at once.
   */
  async function cliAgent(queue: string, target: HubProcess = hub): Promise<TestAgent> {
    const agentId = newAgentId();
    const minted = await cli(['agent', 'token', 'create', agentId, '--queue', queue], {
      env: { AGENTCOM_URL: target.url },
    });
    expect(minted).toMatchObject({ code: 0, stderr: '' });
    expect(minted.stdout).toMatch(/^\S+\n$/);
    const agent = new TestAgent(target.url, agentId, minted.stdout.trim(), [queue]);
    agents.push(agent);
    await agent.connect();
    agent.on('assign', (msg: TaskAssign) => {
      const served = serve(agent, msg).catch((err: unknown) => {
        agentErrors.push(err);
      });
      serving.add(served);
      void served.finally(() => serving.delete(served));
    });
    // serving before the record's answer: a waiting task can be pushed before it
    await agent.recorded();
    return agent;
  }

  async function serve(agent: TestAgent, msg: TaskAssign): Promise<void> {
    const script = msg.task.payload as Script;
    const ref = { taskId: msg.task.id, token: msg.token };
    // Listening before the first await: a cancel may come right after the assignment.
    const cancelled =
      script.action === 'hang'
        ? new Promise<void>((resolve) => {
            const onCancel = (cancel: TaskCancel): void => {
              if (cancel.taskId !== msg.task.id) return;
              agent.off('cancel', onCancel);
              resolve();
            };
            agent.on('cancel', onCancel);
          })
        : undefined;
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    if (script.lines) await agent.send('task:log', { ...ref, lines: script.lines });
    if (script.action === 'complete') {
      expect(await agent.complete(msg, script.result ?? null)).toEqual({ ok: true });
    } else if (script.action === 'fail') {
      await agent.fail(msg, { error: 'boom: the handler gave up', retryable: false });
    } else {
      await cancelled;
      await agent.fail(msg, { error: 'cancelled', retryable: false, kind: 'cancelled' });
    }
  }

  it('mints a token an agent serves with; task add --wait exits 0 with the completed task', async () => {
    const queue = newQueue();
    const agent = await cliAgent(queue);

    const script: Script = {
      action: 'complete',
      result: { answer: 42 },
      lines: ['hello', 'world'],
    };
    const waited = await cli([
      'task',
      'add',
      '--queue',
      queue,
      '--payload',
      JSON.stringify(script),
      '--label',
      'team=ops',
      '--wait',
    ]);
    expect(waited.code).toBe(0);
    expect(waited.stdout).toMatch(/^state:\s+completed$/m);
    expect(waited.stdout).toMatch(/^result:\s+\{"answer":42\}$/m);
    expect(waited.stdout).toMatch(new RegExp(`^agent:\\s+${agent.agentId}$`, 'm'));
    expect(waited.stdout).toMatch(/^labels:\s+team=ops$/m);
    // Not a terminal: one progress line per change of state, on stderr, the last one completed.
    expect(waited.stderr).toMatch(/^task \S+: completed on agent-\w+, attempt 1\/3, [\d.]+s$/m);
    const id = /^id:\s+(\S+)$/m.exec(waited.stdout)?.[1];
    expect(id).toBeDefined();

    const logs = await cli(['task', 'logs', id!]);
    expect(logs).toEqual({ code: 0, stdout: 'hello\nworld\n', stderr: '' });
    const firstLine = await cli(['task', 'logs', id!, '--limit', '1', '--json']);
    expect(JSON.parse(firstLine.stdout)).toEqual({ logs: ['hello'], count: 2 });

    const asJson = await cli([
      '--json',
      'task',
      'add',
      '--queue',
      queue,
      '--payload',
      JSON.stringify({ action: 'complete', result: [1, 2] }),
      '--wait',
    ]);
    expect(asJson.code).toBe(0);
    const task = JSON.parse(asJson.stdout) as TaskView;
    expect(task).toMatchObject({
      queue,
      state: 'completed',
      result: [1, 2],
      agentId: agent.agentId,
      attempt: 1,
    });

    const shown = await cli(['agent', 'get', agent.agentId]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^state:\s+idle$/m);
    expect(shown.stdout).toMatch(/^tasks done:\s+2$/m);
    const table = await cli(['agents']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(
      /^AGENT\s+STATE\s+QUEUES\s+REPLICA\s+TASK\s+HEARTBEAT\s+DONE\s+FAILED$/m,
    );
    expect(table.stdout).toMatch(
      new RegExp(
        `^${agent.agentId}\\s+idle\\s+${queue}\\s+hub-cli\\s+-\\s+\\S+ ago\\s+2\\s+0$`,
        'm',
      ),
    );
  });

  it('task add --wait exits 1 when the agent fails the task for good; task retry runs it again', async () => {
    const queue = newQueue();
    await cliAgent(queue);
    const waited = await cli([
      'task',
      'add',
      '--queue',
      queue,
      '--payload',
      JSON.stringify({ action: 'fail' }),
      '--wait',
    ]);
    expect(waited.code).toBe(1);
    expect(waited.stdout).toMatch(/^state:\s+failed$/m);
    expect(waited.stdout).toMatch(/^error:\s+boom: the handler gave up$/m);
    expect(waited.stdout).toMatch(/^attempt:\s+1\/3$/m);
    const id = /^id:\s+(\S+)$/m.exec(waited.stdout)![1]!;

    const retried = await cli(['task', 'retry', id, '--json']);
    expect(retried.code).toBe(0);
    expect(JSON.parse(retried.stdout)).toMatchObject({ id, state: 'waiting' });
    const again = await cli(['task', 'retry', id]);
    // Running or waiting again (or failed once more, if the agent was that fast).
    expect([0, 1]).toContain(again.code);
  });

  it('task add --wait exits with the outcome of a task no longer kept: a repeated idempotency key, or a task trimmed before a poll saw it end', async () => {
    // A hub that keeps no finished task: each one is trimmed as it completes or fails.
    const trimming = await startHubProcess(
      redis.url,
      `c${randomBytes(3).toString('hex')}`,
      'hub-trim',
      { RETENTION_COMPLETED_COUNT: '0', RETENTION_FAILED_COUNT: '0' },
    );
    try {
      const env = { AGENTCOM_URL: trimming.url };
      const queue = newQueue();
      const agent = await cliAgent(queue, trimming);
      const assigned = agent.nextAssignment(20_000);
      const add = [
        'task',
        'add',
        '--queue',
        queue,
        '--payload',
        JSON.stringify({ action: 'complete', result: 'done' }),
        '--idempotency-key',
        `key-${randomBytes(4).toString('hex')}`,
      ];
      const first = await cli(add, { env });
      expect(first.code).toBe(0);
      const id = first.stdout.trim();
      expect((await assigned).task.id).toBe(id);
      // the agent's report was acknowledged: the task completed, and was trimmed at once
      await Promise.all(serving);
      const gone = await cli(['task', 'get', id], { env });
      expect(gone).toMatchObject({
        code: 1,
        stderr: `agentcom: E_TASK_TRIMMED: Task ${id} completed; retention no longer keeps it, its outcome only is known\n`,
      });

      // The script runs again: the hub answers the task's outcome, and so does the exit code.
      const again = await cli([...add, '--wait'], { env });
      expect(again).toMatchObject({ code: 0, stdout: `id:    ${id}\nstate: completed\n` });
      expect(again.stderr).toMatch(/already names task \S+ \(completed\): no new task/);
      const asJson = await cli(['--json', ...add, '--wait'], { env });
      expect(asJson.code).toBe(0);
      expect(JSON.parse(asJson.stdout)).toEqual({ id, state: 'completed', duplicate: true });

      // A new task: no poll sees it completed (it is trimmed as it completes); the hub answers
      // its outcome (it answered 404, and the wait exited 1 with E_TASK_NOT_FOUND).
      const fresh = await cli(
        [
          'task',
          'add',
          '--queue',
          queue,
          '--payload',
          JSON.stringify({ action: 'complete', result: 'fresh' }),
          '--wait',
        ],
        { env },
      );
      expect(fresh).toMatchObject({
        code: 0,
        stdout: expect.stringMatching(/^id: +\S+\nstate: completed\n$/),
      });
      expect(fresh.stderr).toMatch(/is no longer kept by the hub: its outcome only is known/);

      // A task cancelled while it runs fails as cancelled, trimmed at once: exit 3.
      const pushed = agent.nextAssignment(20_000);
      const waiter = start(
        ['--json', 'task', 'add', '--queue', queue, '--payload', '{"action":"hang"}', '--wait'],
        { env },
      );
      const hanging = (await pushed).task.id;
      expect((await cli(['task', 'cancel', hanging], { env })).code).toBe(0);
      const cancelled = await withTimeout(waiter.exited, 20_000, 'the waiting agentcom to exit');
      expect(cancelled.code).toBe(3);
      expect(JSON.parse(cancelled.stdout)).toEqual({ id: hanging, state: 'cancelled' });
    } finally {
      await trimming.kill('SIGKILL');
    }
  });

  it('task add --wait exits 3 when another agentcom process cancels the task', async () => {
    const queue = newQueue();
    const agent = await cliAgent(queue);
    const assigned = agent.nextAssignment(20_000);
    const waiter = start([
      'task',
      'add',
      '--queue',
      queue,
      '--payload',
      JSON.stringify({ action: 'hang' }),
      '--wait',
    ]);
    const taskId = (await assigned).task.id;

    const cancel = await cli(['task', 'cancel', taskId, '--reason', 'not needed']);
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toMatch(
      new RegExp(`^cancel requested: task ${taskId} is \\w+; its agent was told to stop\\n$`),
    );

    const waited = await withTimeout(waiter.exited, 20_000, 'the waiting agentcom to exit');
    expect(waited.code).toBe(3);
    expect(waited.stdout).toMatch(/^state:\s+cancelled$/m);
    expect(waited.stdout).toMatch(/^error:\s+.*not needed/m);
    const again = await cli(['task', 'cancel', taskId, '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ id: taskId, state: 'cancelled' });
  });

  it('prints JSON that parses: task add, get, list, agents, queues', async () => {
    const queue = newQueue();
    const added = await cli([
      'task',
      'add',
      '--json',
      '--queue',
      queue,
      '--payload',
      '{"n": 1}',
      '--priority',
      '7',
      '--attempts',
      '2',
      '--timeout-ms',
      '60000',
    ]);
    expect(added.code).toBe(0);
    const created = JSON.parse(added.stdout) as CreateTaskResponse;
    expect(created).toMatchObject({ state: 'waiting', duplicate: false });

    const got = await cli(['--json', 'task', 'get', created.id]);
    expect(JSON.parse(got.stdout)).toMatchObject({
      id: created.id,
      queue,
      state: 'waiting',
      payload: { n: 1 },
      priority: 7,
      attempts: 2,
      timeoutMs: 60000,
    });
    const listed = JSON.parse((await cli(['task', 'list', '--queue', queue, '--json'])).stdout) as {
      tasks: TaskView[];
    };
    expect(listed.tasks.map((t) => t.id)).toEqual([created.id]);

    const agent = await cliAgent(`${queue}-served`);
    const agentsOut = JSON.parse((await cli(['agents', '--json'])).stdout) as {
      agents: AgentView[];
    };
    expect(agentsOut.agents).toContainEqual(
      expect.objectContaining({ agentId: agent.agentId, state: 'idle', hubId: 'hub-cli' }),
    );
    const queuesOut = JSON.parse((await cli(['queues', '--json'])).stdout) as {
      queues: Array<{ name: string; counts: Record<string, number>; idleAgents: number }>;
    };
    expect(queuesOut.queues).toContainEqual(
      expect.objectContaining({ name: queue, counts: expect.objectContaining({ prioritized: 1 }) }),
    );

    // The human forms of the same.
    const queuesTable = await cli(['queues']);
    expect(queuesTable.stdout).toMatch(
      /^QUEUE\s+WAITING\s+ACTIVE\s+DELAYED\s+COMPLETED\s+FAILED\s+IDLE AGENTS$/m,
    );
    expect(queuesTable.stdout).toMatch(new RegExp(`^${queue}\\s+1\\s+0\\s+0\\s+0\\s+0\\s+0$`, 'm'));
    expect(queuesTable.stdout).toMatch(
      new RegExp(`^${queue}-served\\s+0\\s+0\\s+0\\s+0\\s+0\\s+1$`, 'm'),
    );
    const shown = await cli(['task', 'get', created.id]);
    expect(shown.stdout).toMatch(/^priority:\s+7$/m);
    expect(shown.stdout).toMatch(/^payload:\s+\{"n":1\}$/m);

    // `agents --watch`: one JSON line per refresh (the hidden --watch-count ends it).
    const watched = await cli([
      'agents',
      '--watch',
      '--json',
      '--interval-s',
      '0.1',
      '--watch-count',
      '2',
    ]);
    expect(watched.code).toBe(0);
    const lines = watched.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(JSON.parse(line)).toHaveProperty('agents');
  });

  it('task list --all follows nextCursor through every page', async () => {
    const queue = newQueue();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue,
        payload: i,
      });
      ids.push(created.body.id);
    }
    const page = JSON.parse(
      (await cli(['task', 'list', '--queue', queue, '--limit', '3', '--json'])).stdout,
    ) as { tasks: TaskView[]; nextCursor?: string };
    expect(page.tasks).toHaveLength(3);
    expect(page.nextCursor).toEqual(expect.any(String));

    const next = JSON.parse(
      (
        await cli([
          'task',
          'list',
          '--queue',
          queue,
          '--limit',
          '3',
          '--cursor',
          page.nextCursor!,
          '--json',
        ])
      ).stdout,
    ) as { tasks: TaskView[] };
    expect(next.tasks).toHaveLength(3);

    const all = await cli(['task', 'list', '--queue', queue, '--limit', '3', '--all', '--json']);
    expect(all.code).toBe(0);
    const everything = JSON.parse(all.stdout) as { tasks: TaskView[]; nextCursor?: string };
    expect(everything.tasks.map((t) => t.id).sort()).toEqual([...ids].sort());
    expect(everything.nextCursor).toBeUndefined();

    const table = await cli([
      'task',
      'list',
      '--queue',
      queue,
      '--state',
      'waiting',
      '--limit',
      '3',
      '--all',
    ]);
    const rows = table.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^ID\s+QUEUE\s+STATE\s+AGENT\s+ATTEMPT\s+AGE$/);
    expect(
      rows
        .slice(1)
        .map((row) => row.split(/\s+/)[0])
        .sort(),
    ).toEqual([...ids].sort());
    expect(rows[1]).toMatch(new RegExp(`^\\S+\\s+${queue}\\s+waiting\\s+-\\s+0/3\\s+\\S+$`));
    expect(table.stderr).toBe('');

    const first = await cli(['task', 'list', '--queue', queue, '--limit', '3']);
    expect(first.stdout.trim().split('\n')).toHaveLength(4);
    expect(first.stderr).toMatch(
      /^agentcom: more tasks: --cursor \S+ for the next page, or --all\n$/,
    );
  });

  it('takes the payload from a file or stdin, and refuses one that is not JSON with exit 2', async () => {
    const file = join(dir, 'payload.json');
    writeFileSync(file, '{\n  "from": "file"\n}\n');
    const queue = newQueue();
    const fromFile = await cli([
      'task',
      'add',
      '--queue',
      queue,
      '--payload',
      `@${file}`,
      '--json',
    ]);
    expect(fromFile.code).toBe(0);
    const fromStdin = await cli(['task', 'add', '--queue', queue, '--payload', '-'], {
      stdin: '["from", "stdin"]',
    });
    expect(fromStdin.code).toBe(0);
    const payloads = await Promise.all(
      [(JSON.parse(fromFile.stdout) as { id: string }).id, fromStdin.stdout.trim()].map(
        async (id) =>
          (JSON.parse((await cli(['task', 'get', id, '--json'])).stdout) as TaskView).payload,
      ),
    );
    expect(payloads).toEqual([{ from: 'file' }, ['from', 'stdin']]);

    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"unterminated": \n');
    for (const [payload, stdin, expected] of [
      ['{not json', undefined, /^agentcom: E_USAGE: --payload: not valid JSON: .+\n$/],
      ['plain words', undefined, /^agentcom: E_USAGE: --payload: not valid JSON: .+\n$/],
      [
        `@${bad}`,
        undefined,
        new RegExp(`^agentcom: E_USAGE: --payload: ${bad}: not valid JSON: .+\\n$`),
      ],
      [
        `@${join(dir, 'missing.json')}`,
        undefined,
        /^agentcom: E_USAGE: --payload: cannot read \S+ \(ENOENT\)\n$/,
      ],
      ['-', '', /^agentcom: E_USAGE: --payload: stdin: not valid JSON: .+\n$/],
    ] as const) {
      const result = await cli(['task', 'add', '--payload', payload], {
        ...(stdin !== undefined ? { stdin } : {}),
      });
      expect({ payload, ...result }).toEqual({
        payload,
        code: 2,
        stdout: '',
        stderr: expect.stringMatching(expected),
      });
    }
    // Other bad values name their option too; nothing is created.
    for (const [args, option] of [
      [['--attempts', 'many'], '--attempts'],
      [['--attempts', '0'], '--attempts'],
      [['--label', 'novalue'], '--label'],
      [['--queue', 'bad:name'], '--queue'],
      [['--wait-timeout-s', '-1'], '--wait-timeout-s'],
    ] as const) {
      const result = await cli(['task', 'add', '--payload', '1', ...args]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(new RegExp(`^agentcom: E_USAGE: ${option}: .+\\n$`));
    }
    expect((await cli(['task', 'add'])).code).toBe(2);
    expect((await cli(['task', 'frobnicate'])).code).toBe(2);
    const inArgv = await cli(['--admin-key', TEST_ADMIN_KEY, 'queues']);
    expect(inArgv.code).toBe(2);
    expect(inArgv.stderr).toMatch(/never taken from the command line/);
  });

  it('takes a payload file or stdin that starts with a byte order mark', async () => {
    const file = join(dir, 'bom.json');
    writeFileSync(file, '\uFEFF{"from": "bom file"}\r\n');
    const queue = newQueue();
    const fromFile = await cli(['task', 'add', '--queue', queue, '--payload', `@${file}`]);
    expect(fromFile).toMatchObject({ code: 0, stderr: '' });
    const fromStdin = await cli(['task', 'add', '--queue', queue, '--payload', '-'], {
      stdin: '\uFEFF["bom", "stdin"]',
    });
    expect(fromStdin).toMatchObject({ code: 0, stderr: '' });
    const payloads = await Promise.all(
      [fromFile.stdout.trim(), fromStdin.stdout.trim()].map(
        async (id) =>
          (JSON.parse((await cli(['task', 'get', id, '--json'])).stdout) as TaskView).payload,
      ),
    );
    expect(payloads).toEqual([{ from: 'bom file' }, ['bom', 'stdin']]);
  });

  it('exits 5 without a hub URL or key, or when the hub does not answer', async () => {
    const noUrl = await cli(['queues'], { env: { AGENTCOM_URL: null } });
    expect(noUrl.code).toBe(5);
    expect(noUrl.stderr).toMatch(/^agentcom: E_CONFIG: --url \(AGENTCOM_URL\): is required.*\n$/);
    const noUrlJson = await cli(['queues', '--json'], { env: { AGENTCOM_URL: null } });
    expect(JSON.parse(noUrlJson.stdout)).toMatchObject({ error: { code: 'E_CONFIG' } });

    const noKey = await cli(['queues'], { env: { AGENTCOM_ADMIN_KEY: null } });
    expect(noKey.code).toBe(5);
    expect(noKey.stderr).toMatch(/AGENTCOM_ADMIN_KEY/);

    const closed = await cli(['queues'], {
      env: { AGENTCOM_URL: `http://127.0.0.1:${await freePort()}` },
    });
    expect(closed.code).toBe(5);
    expect(closed.stderr).toMatch(
      /^agentcom: E_UNREACHABLE: cannot reach the hub at .+ECONNREFUSED.*\n$/,
    );

    // The key from an owner-only file; a file others can read is refused.
    const keyFile = join(dir, 'admin-key');
    writeFileSync(keyFile, `${TEST_ADMIN_KEY}\n`, { mode: 0o600 });
    const fromFile = await cli(['--admin-key-file', keyFile, 'queues', '--json'], {
      env: { AGENTCOM_ADMIN_KEY: null },
    });
    expect(fromFile.code).toBe(0);
    expect(JSON.parse(fromFile.stdout)).toHaveProperty('queues');
    const open = join(dir, 'open-key');
    writeFileSync(open, TEST_ADMIN_KEY, { mode: 0o644 });
    const refused = await cli(['queues', '--admin-key-file', open]);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(/chmod 600/);
  });

  it('exits 1 with E_UNAUTHORIZED for a wrong key, and with the hub error code otherwise', async () => {
    const wrong = await cli(['task', 'list'], {
      env: { AGENTCOM_ADMIN_KEY: 'wrong-key-wrong-key-0000' },
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^agentcom: E_UNAUTHORIZED: .+\n$/);
    expect(wrong.stdout).toBe('');
    const wrongJson = await cli(['--json', 'agents'], {
      env: { AGENTCOM_ADMIN_KEY: 'wrong-key-wrong-key-0000' },
    });
    expect(wrongJson.code).toBe(1);
    expect(JSON.parse(wrongJson.stdout)).toMatchObject({ error: { code: 'E_UNAUTHORIZED' } });

    const missing = await cli(['task', 'get', 'no-such-task', '--json']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('agentcom: E_TASK_NOT_FOUND: No task no-such-task\n');
    expect(JSON.parse(missing.stdout)).toMatchObject({ error: { code: 'E_TASK_NOT_FOUND' } });
    expect((await cli(['agent', 'drain', 'ghost'])).stderr).toMatch(
      /^agentcom: E_AGENT_NOT_FOUND: /,
    );
  });

  it('exits 2 (E_USAGE) for a malformed agent id or queue name, whatever the command, sending nothing', async () => {
    // `agent get 'bad id'` was refused by the CLI (exit 2), `agent token create 'bad id'` was sent
    // and refused by the hub (exit 1, E_VALIDATION): the same malformed value, two exit codes
    const agentId = newAgentId();
    const cases: Array<[string[], RegExp]> = [
      [['agent', 'get', 'bad id'], /^agentcom: E_USAGE: agent id "bad id": /],
      [['agent', 'token', 'create', 'bad id'], /^agentcom: E_USAGE: agent id "bad id": /],
      [['agent', 'token', 'create', agentId, '--queue', 'q:1'], /^agentcom: E_USAGE: --queue: /],
      [
        [
          'agent',
          'token',
          'create',
          agentId,
          '--queue',
          Array(33)
            .fill('q')
            .map((q, i) => `${q}${i}`)
            .join(','),
        ],
        /^agentcom: E_USAGE: --queue: /,
      ],
      [['task', 'list', '--queue', 'q:1'], /^agentcom: E_USAGE: --queue: /],
      ...['get', 'cancel', 'retry', 'logs'].map((command): [string[], RegExp] => [
        ['task', command, 'some-id', '--queue', 'q:1'],
        /^agentcom: E_USAGE: --queue: /,
      ]),
    ];
    for (const [args, stderr] of cases) {
      const run = await cli(args);
      expect({ args, code: run.code, stdout: run.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(run.stderr).toMatch(stderr);
    }
    // nothing was sent: the agent was not created
    expect((await api(hub.url, 'GET', `/v1/agents/${agentId}`)).status).toBe(404);
  });

  it("task get, cancel, retry and logs take --queue: that queue's task, where another queue has a task of its id", async () => {
    // a BullMQ producer naming its jobs, with the same id in two queues
    const id = `job-${randomBytes(4).toString('hex')}`;
    const queues = [newQueue(), newQueue()];
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const bullPrefix = new RedisKeys(prefix).bullPrefix;
    const producers = queues.map((queue) => new Queue(queue, { connection, prefix: bullPrefix }));
    try {
      for (const [i, producer] of producers.entries()) {
        await producer.add('task', { payload: { from: queues[i] } }, { jobId: id });
      }
      const [a, b] = queues as [string, string];
      const shown = async (queue: string) => {
        const got = await cli(['task', 'get', id, '--queue', queue, '--json']);
        expect(got).toMatchObject({ code: 0, stderr: '' });
        return JSON.parse(got.stdout) as TaskView;
      };
      for (const queue of queues) {
        expect(await shown(queue)).toMatchObject({
          id,
          queue,
          state: 'waiting',
          payload: { from: queue },
        });
      }
      expect(await cli(['task', 'cancel', id, '--queue', b])).toEqual({
        code: 0,
        stdout: `cancelled ${id}\n`,
        stderr: '',
      });
      expect(await shown(a)).toMatchObject({ queue: a, state: 'waiting' });
      expect(await shown(b)).toMatchObject({ queue: b, state: 'cancelled' });
      // cancelled before it ran: no retry, no log line
      const retry = await cli(['task', 'retry', id, '--queue', b]);
      expect(retry).toMatchObject({ code: 1, stdout: '' });
      expect(retry.stderr).toMatch(/E_INVALID_STATE/);
      expect(await cli(['task', 'logs', id, '--queue', b])).toEqual({
        code: 0,
        stdout: '',
        stderr: '',
      });
      expect(await cli(['task', 'cancel', id, '--queue', a])).toMatchObject({ code: 0 });
      expect(await shown(a)).toMatchObject({ queue: a, state: 'cancelled' });
    } finally {
      await Promise.all(producers.map((producer) => producer.close()));
      await connection.quit();
    }
  });

  it('task add --wait-timeout-s exits 4 when no agent takes the task in time', async () => {
    const waited = await cli([
      'task',
      'add',
      '--queue',
      newQueue(),
      '--payload',
      '{}',
      '--wait-timeout-s',
      '0.5',
      '--json',
    ]);
    expect(waited.code).toBe(4);
    expect(JSON.parse(waited.stdout)).toMatchObject({ state: 'waiting' });
    expect(waited.stderr).toMatch(
      /^agentcom: gave up waiting after 0.5 s: task \S+ is waiting and goes on$/m,
    );
  });

  it('drains, resumes and revokes an agent', async () => {
    const queue = newQueue();
    const agent = await cliAgent(queue);
    expect(await cli(['agent', 'drain', agent.agentId])).toEqual({
      code: 0,
      stdout: `${agent.agentId} draining\n`,
      stderr: '',
    });
    expect(await cli(['agent', 'resume', agent.agentId])).toEqual({
      code: 0,
      stdout: `${agent.agentId} idle\n`,
      stderr: '',
    });
    const disconnected = withTimeout(
      new Promise((resolve) => agent.socket.once('disconnect', resolve)),
      5000,
      'the revoked agent to be disconnected',
    );
    const revoked = await cli(['agent', 'token', 'revoke', agent.agentId, '--json']);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toEqual({ agentId: agent.agentId, revoked: true });
    await disconnected;

    // A new token (rotation) works again; --json shows the whole response.
    const rotated = await cli([
      '--json',
      'agent',
      'token',
      'create',
      agent.agentId,
      '--queue',
      queue,
    ]);
    const body = JSON.parse(rotated.stdout) as { agentId: string; token: string; queues: string[] };
    expect(body).toMatchObject({ agentId: agent.agentId, queues: [queue] });
    const again = new TestAgent(hub.url, agent.agentId, body.token, [queue]);
    agents.push(again);
    await again.connect();
  });
});

/** Bundles the CLIs with sidecar/build.mjs into `dir` and returns the path of `agentcom.js`. */
async function buildOperatorBundle(dir: string): Promise<string> {
  const build = spawn(
    process.execPath,
    [join(ROOT, 'sidecar', 'build.mjs'), '--outfile', join(dir, 'cli.js')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  build.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(build, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`bundling agentcom failed (exit ${String(code)}): ${stderr}`);
  return join(dir, 'agentcom.js');
}

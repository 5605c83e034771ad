import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { AgentView, TaskView } from '@agentcom/shared';
import { ApiError, HubConfigError, HubUnreachableError, UsageError } from './errors';
import {
  formatAgent,
  formatAgentTable,
  formatDuration,
  formatFields,
  formatProgress,
  formatQueueTable,
  formatTable,
} from './format';
import { HubClient } from './hub-client';
import { runOperatorCli } from './program';
import { resolveHubSettings } from './settings';
import { parseLabels, readPayload, taskBodyFromFlags, type TaskAddFlags } from './task-input';
import { progressSink, waitForTask } from './wait';
import { SIDECAR_VERSION } from '../version';

/** The pure parts of `agentcom`; the CLI against a real hub is test/e2e/operator-cli.e2e.test.ts. */

const never = new AbortController().signal;
const task = (patch: Partial<TaskView> = {}): TaskView => ({
  id: 't1',
  queue: 'default',
  state: 'waiting',
  payload: null,
  priority: 0,
  attempts: 3,
  attempt: 0,
  attemptsMade: 0,
  createdAt: 0,
  ...patch,
});
const flags = (patch: Partial<TaskAddFlags>): TaskAddFlags => ({
  queue: 'default',
  payload: '{}',
  label: [],
  ...patch,
});
const agentView = (patch: Partial<AgentView> = {}): AgentView => ({
  agentId: 'a1',
  state: 'idle',
  queues: ['q'],
  labels: {},
  tasksDone: 0,
  tasksFailed: 0,
  version: 1,
  ...patch,
});
/** A client whose `getTask` answers, call by call, the next of `answers` (an error is thrown). */
const scriptedClient = (answers: Array<TaskView | Error>) => ({
  getTask: async (): Promise<TaskView> => {
    const next = answers.shift()!;
    if (next instanceof Error) throw next;
    return next;
  },
});
/** A stream, and what was written to it so far. */
const textSink = () => {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { stream, text: () => text };
};
/**
 * Runs `body` against a real HTTP server on a free local port, answering with `handler`, and
 * closes it after, even with requests still open (a server that never answers).
 */
const withLocalServer = async (
  handler: RequestListener,
  body: (url: string) => Promise<void>,
): Promise<void> => {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    await body(`http://127.0.0.1:${port}`);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
};

describe('format', () => {
  it('shows durations compactly', () => {
    expect([-5, 850, 12_000, 184_000, 7_500_000, 277_200_000].map(formatDuration)).toEqual([
      '0s',
      '850ms',
      '12s',
      '3m04s',
      '2h05m',
      '3d05h',
    ]);
  });

  it('pads table columns but the last, and key: value lines', () => {
    expect(
      formatTable(
        ['ID', 'STATE', 'AGE'],
        [
          ['a', 'running', '1s'],
          ['bbbb', 'idle', ''],
        ],
      ),
    ).toBe('ID    STATE    AGE\na     running  1s\nbbbb  idle\n');
    expect(
      formatFields([
        ['id', 'x'],
        ['agent', undefined],
        ['state', 'done'],
      ]),
    ).toBe('id:    x\nstate: done\n');
  });

  it('counts prioritized tasks as waiting', () => {
    expect(
      formatQueueTable([
        { name: 'q', counts: { waiting: 1, prioritized: 2, failed: 1 }, idleAgents: 3 },
      ]),
    ).toBe(
      'QUEUE  WAITING  ACTIVE  DELAYED  COMPLETED  FAILED  IDLE AGENTS\n' +
        'q      3        0       0        0          1       3\n',
    );
  });

  it('shows the ack timeouts an agent let pass in a row next to its cooldown, only when it has some', () => {
    const now = Date.UTC(2026, 0, 2, 3, 4, 5);
    const resting = agentView({ state: 'cooldown', cooldownUntil: now + 12_000, missedAcks: 3 });
    expect(formatAgentTable([resting, agentView({ agentId: 'a2' })], now)).toBe(
      'AGENT  STATE                          QUEUES  REPLICA  TASK  HEARTBEAT  DONE  FAILED\n' +
        'a1     cooldown 12s (missed acks: 3)  q       -        -     -          0     0\n' +
        'a2     idle                           q       -        -     -          0     0\n',
    );
    expect(formatAgent(resting, now)).toBe(
      'agent:          a1\n' +
        'state:          cooldown\n' +
        'queues:         q\n' +
        'cooldown until: 2026-01-02T03:04:17.000Z\n' +
        'missed acks:    3\n' +
        'tasks done:     0\n' +
        'tasks failed:   0\n',
    );
    expect(formatAgent(agentView({}), now)).not.toContain('missed acks');
  });

  it("shows a busy agent's pending drain, and who asked for it", () => {
    const now = Date.UTC(2026, 0, 2, 3, 4, 5);
    const agent = (patch: Partial<AgentView>) => agentView({ state: 'working', ...patch });
    const busy = agent({ drainRequested: 'operator' });
    const draining = agent({ agentId: 'a2', state: 'draining', drainRequested: 'self' });
    expect(formatAgentTable([busy, draining, agent({ agentId: 'a3' })], now)).toBe(
      'AGENT  STATE                    QUEUES  REPLICA  TASK  HEARTBEAT  DONE  FAILED\n' +
        'a1     working (drain pending)  q       -        -     -          0     0\n' +
        'a2     draining                 q       -        -     -          0     0\n' +
        'a3     working                  q       -        -     -          0     0\n',
    );
    expect(formatAgent(busy, now)).toMatch(/^drain: +by operator$/m);
    expect(formatAgent(agent({}), now)).not.toContain('drain');
  });

  it('shows the progress of a task being waited on', () => {
    expect(
      formatProgress(
        task({ state: 'running', agentId: 'a1', attempt: 2, progress: { pct: 40 } }),
        1234,
      ),
    ).toBe('task t1: running on a1, attempt 2/3, 1.2s, progress {"pct":40}');
  });
});

describe('task input', () => {
  it('reads the payload from JSON text, a file, or stdin', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agentcom-payload-'));
    try {
      writeFileSync(join(dir, 'p.json'), '{"a": [1, 2]}');
      expect(await readPayload('"text"', Readable.from([]), never)).toBe('text');
      expect(await readPayload(`@${join(dir, 'p.json')}`, Readable.from([]), never)).toEqual({
        a: [1, 2],
      });
      expect(await readPayload('-', Readable.from(['[1,', '2]']), never)).toEqual([1, 2]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the option of a bad value, in one line', async () => {
    const refusal = async (patch: Partial<TaskAddFlags>) => {
      const err = await taskBodyFromFlags(flags(patch), Readable.from([]), never).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(UsageError);
      const usage = err as UsageError;
      expect(usage.message).not.toContain('\n');
      return [usage.option, usage.exitCode];
    };
    expect(await refusal({ payload: '{\n"a":' })).toEqual(['--payload', 2]);
    expect(await refusal({ priority: '1.5' })).toEqual(['--priority', 2]);
    expect(await refusal({ timeoutMs: '5' })).toEqual(['--timeout-ms', 2]);
    expect(await refusal({ backoff: 'linear:5' })).toEqual(['--backoff', 2]);
    expect(await refusal({ label: ['=x'] })).toEqual(['--label', 2]);
    expect(parseLabels(['a=b=c', 'd='])).toEqual({ a: 'b=c', d: '' });
    // refused as the sidecar's --label refuses them (they vanished, or the last one won)
    expect(await refusal({ label: ['__proto__=x', 'k=v'] })).toEqual(['--label', 2]);
    expect(await refusal({ label: ['k=v', 'k=w'] })).toEqual(['--label', 2]);
    expect(
      await taskBodyFromFlags(
        flags({ payload: '1', attempts: '2', backoff: 'exponential:500', label: ['k=v'] }),
        Readable.from([]),
        never,
      ),
    ).toEqual({
      queue: 'default',
      payload: 1,
      attempts: 2,
      backoff: { type: 'exponential', delayMs: 500 },
      labels: { k: 'v' },
    });
  });
});

describe('hub settings', () => {
  it('takes the URL from --url or AGENTCOM_URL and the key from a file or AGENTCOM_ADMIN_KEY', () => {
    expect(
      resolveHubSettings({}, { AGENTCOM_URL: 'http://hub:8080/', AGENTCOM_ADMIN_KEY: ' k ' }),
    ).toEqual({ url: 'http://hub:8080', adminKey: 'k' });
    expect(
      resolveHubSettings(
        { url: 'https://lb/agentcom/' },
        { AGENTCOM_URL: 'http://x', AGENTCOM_ADMIN_KEY: 'k' },
      ).url,
    ).toBe('https://lb/agentcom');
    for (const env of [
      { AGENTCOM_ADMIN_KEY: 'k' },
      { AGENTCOM_URL: 'ftp://hub', AGENTCOM_ADMIN_KEY: 'k' },
      { AGENTCOM_URL: 'http://user:pw@hub', AGENTCOM_ADMIN_KEY: 'k' },
      { AGENTCOM_URL: 'http://hub' },
      { AGENTCOM_URL: 'http://hub', AGENTCOM_ADMIN_KEY_FILE: '/no/such/file' },
    ]) {
      expect(() => resolveHubSettings({}, env)).toThrow(HubConfigError);
    }
  });
});

describe('the admin key', () => {
  it('is refused, without being echoed, when it holds what an HTTP header cannot carry', () => {
    const dir = mkdtempSync(join(tmpdir(), 'agentcom-key-'));
    try {
      const file = join(dir, 'admin.key');
      writeFileSync(file, 'S3CRET-ADMIN-KEY\n# rotated 2026-01-01\n', { mode: 0o600 });
      for (const env of [
        { AGENTCOM_URL: 'http://hub', AGENTCOM_ADMIN_KEY_FILE: file },
        { AGENTCOM_URL: 'http://hub', AGENTCOM_ADMIN_KEY: 'S3CRET-ADMIN-KEY\nX=1' },
        { AGENTCOM_URL: 'http://hub', AGENTCOM_ADMIN_KEY: 'S3CRET ADMIN KEY' },
      ]) {
        let error: unknown;
        try {
          resolveHubSettings({}, env);
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(HubConfigError);
        expect((error as Error).message).toMatch(/a character an HTTP header cannot carry/);
        expect((error as Error).message).not.toContain('S3CRET');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('waiting for a task', () => {
  const quiet = progressSink(new PassThrough(), 'quiet', () => undefined);

  it('rides out a hub unreachable for a while, and prints a line per change when not a terminal', async () => {
    const answers: Array<TaskView | Error> = [
      task(),
      new HubUnreachableError('cannot reach the hub'),
      new ApiError(503, { error: { code: 'E_UNAVAILABLE', message: 'draining' } }),
      task({ state: 'running', agentId: 'a1', attempt: 1 }),
      task({ state: 'running', agentId: 'a1', attempt: 1 }),
      task({ state: 'completed', agentId: 'a1', attempt: 1, result: 1 }),
    ];
    const stderr = textSink();
    const outcome = await waitForTask(scriptedClient(answers), 't1', {
      intervalMs: 1,
      progress: progressSink(stderr.stream, 'lines', () => undefined),
      signal: never,
      now: () => 0,
    });
    expect(outcome).toMatchObject({ kind: 'finished', task: { state: 'completed' } });
    expect(stderr.text().split('\n')).toEqual([
      'task t1: waiting, attempt 0/3, 0.0s',
      'task t1: cannot reach the hub (trying again)',
      'task t1: draining (trying again)',
      'task t1: running on a1, attempt 1/3, 0.0s',
      'task t1: completed on a1, attempt 1/3, 0.0s',
      '',
    ]);
  });

  it('gives up on other errors, and on the timeout', async () => {
    const notFound = new ApiError(404, { error: { code: 'E_TASK_NOT_FOUND', message: 'No task' } });
    await expect(
      waitForTask({ getTask: () => Promise.reject(notFound) }, 't1', {
        progress: quiet,
        signal: never,
      }),
    ).rejects.toBe(notFound);
    let clock = 0;
    const outcome = await waitForTask(
      {
        getTask: async () => {
          clock += 100;
          return task();
        },
      },
      't1',
      { intervalMs: 1, timeoutMs: 250, progress: quiet, signal: never, now: () => clock },
    );
    expect(outcome).toMatchObject({ kind: 'timeout', task: { state: 'waiting' } });
  });

  it('ends with the outcome of a task that finished and was trimmed between two polls (410)', async () => {
    const trimmed = (details: unknown) =>
      new ApiError(410, { error: { code: 'E_TASK_TRIMMED', message: 'gone', details } });
    const answers: Array<TaskView | Error> = [task(), trimmed({ id: 't1', state: 'cancelled' })];
    const outcome = await waitForTask(scriptedClient(answers), 't1', {
      intervalMs: 1,
      progress: quiet,
      signal: never,
    });
    expect(outcome).toEqual({ kind: 'trimmed', task: { id: 't1', state: 'cancelled' } });
    // details that say no outcome of this task: the hub's error, as any other
    for (const details of [undefined, { id: 't2', state: 'failed' }, { id: 't1', state: 'lost' }]) {
      const refused = trimmed(details);
      await expect(
        waitForTask({ getTask: () => Promise.reject(refused) }, 't1', {
          progress: quiet,
          signal: never,
        }),
      ).rejects.toBe(refused);
    }
  });

  it('gives up on a hub failing for 30 s in a row, counted from the start of the first failing request', async () => {
    let clock = 0;
    let requests = 0;
    const client = {
      // No answer: each request runs into its 30 s timeout.
      getTask: async (): Promise<TaskView> => {
        requests++;
        clock += 30_000;
        throw new HubUnreachableError('no answer from the hub within 30 s');
      },
    };
    await expect(
      waitForTask(client, 't1', {
        intervalMs: 1,
        progress: quiet,
        signal: never,
        now: () => clock,
      }),
    ).rejects.toBeInstanceOf(HubUnreachableError);
    expect({ clock, requests }).toEqual({ clock: 30_000, requests: 1 });
  });

  it('bounds each request by the time left to --wait-timeout-s', async () => {
    let clock = 0;
    const bounds: Array<number | undefined> = [];
    const client = {
      // Answers once, then never: a request lasts until its bound, or the 30 s request timeout.
      getTask: async (_id: string, options?: { timeoutMs?: number }): Promise<TaskView> => {
        bounds.push(options?.timeoutMs);
        if (bounds.length === 1) {
          clock += 100;
          return task();
        }
        clock += Math.min(options?.timeoutMs ?? Infinity, 30_000);
        throw new HubUnreachableError('no answer');
      },
    };
    const stderr = textSink();
    const outcome = await waitForTask(client, 't1', {
      intervalMs: 1,
      timeoutMs: 5_000,
      progress: progressSink(stderr.stream, 'lines', () => undefined),
      signal: never,
      now: () => clock,
    });
    expect(outcome).toMatchObject({ kind: 'timeout', task: { state: 'waiting' } });
    expect({ clock, bounds }).toEqual({ clock: 5_000, bounds: [5_000, 4_900] });
    // The request cut short by the deadline is no passing problem worth a line.
    expect(stderr.text()).toBe('task t1: waiting, attempt 0/3, 0.1s\n');
  });

  it("fails with the hub's error when the timeout ran out before the hub ever answered", async () => {
    let clock = 0;
    let requests = 0;
    const unreachable = new HubUnreachableError('no answer');
    const client = {
      getTask: async (_id: string, options?: { timeoutMs?: number }): Promise<TaskView> => {
        requests++;
        clock += Math.min(options?.timeoutMs ?? Infinity, 30_000);
        throw unreachable;
      },
    };
    await expect(
      waitForTask(client, 't1', {
        intervalMs: 1,
        timeoutMs: 2_000,
        progress: quiet,
        signal: never,
        now: () => clock,
      }),
    ).rejects.toBe(unreachable);
    expect({ clock, requests }).toEqual({ clock: 2_000, requests: 1 });
  });
});

describe('the hub client', () => {
  it('gives up on a request after the bound it was given, when shorter than its timeout', async () => {
    // A real server that never answers (a busy machine may not even see the request in time).
    await withLocalServer(
      () => undefined,
      async (url) => {
        const client = new HubClient({ url, adminKey: 'k' }, never);
        const err = await client.getTask('t1', { timeoutMs: 50 }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(HubUnreachableError);
        expect((err as Error).message).toBe(
          `no answer from the hub at ${url} within 0.1 s (GET /v1/tasks/t1)`,
        );
      },
    );
  });
});

describe('the command line', () => {
  const run = async (args: string[], env: Record<string, string> = {}) => {
    const stdout = textSink();
    const stderr = textSink();
    const code = await runOperatorCli(['node', 'agentcom', ...args], {
      stdin: Readable.from([]),
      stdout: stdout.stream,
      stderr: stderr.stream,
      env,
      stdoutIsTty: false,
      stderrIsTty: false,
      columns: () => undefined,
      interrupted: never,
      now: Date.now,
    });
    return { code, out: stdout.text(), err: stderr.text() };
  };
  /** Runs `body` with the environment that points the CLI at a local server answering `handler`. */
  const withFakeHub = (
    handler: RequestListener,
    body: (env: Record<string, string>) => Promise<void>,
  ): Promise<void> =>
    withLocalServer(handler, (url) => body({ AGENTCOM_URL: url, AGENTCOM_ADMIN_KEY: 'k' }));

  it('maps usage errors to 2, a missing hub to 5, help to 0', async () => {
    expect((await run(['--help'])).code).toBe(0);
    expect(await run(['task', 'nope'])).toMatchObject({ code: 2 });
    expect(await run(['task', 'get'])).toMatchObject({ code: 2 });
    expect(await run(['queues'])).toMatchObject({
      code: 5,
      err: expect.stringMatching(/^agentcom: E_CONFIG: --url \(AGENTCOM_URL\): is required/),
    });
    expect(await run(['--json', 'queues'], { AGENTCOM_URL: 'http://h' })).toMatchObject({
      code: 5,
      out: expect.stringContaining('"code": "E_CONFIG"'),
    });
    expect(await run(['task', 'list', '--limit', '0'], { AGENTCOM_URL: 'http://h' })).toMatchObject(
      { code: 2, err: 'agentcom: E_USAGE: --limit: must be from 1 to 500\n' },
    );
  });

  it("reports the parser's usage errors as its own: E_USAGE on stderr, the body with --json", async () => {
    const body = (message: string): string =>
      `${JSON.stringify({ error: { code: 'E_USAGE', message } }, null, 2)}\n`;
    const missing = "required option '--payload <json>' not specified";
    expect(await run(['--json', 'task', 'add'])).toEqual({
      code: 2,
      out: body(missing),
      err: `agentcom: E_USAGE: ${missing}\n`,
    });
    expect(await run(['task', 'list', '--bogus', '--json'])).toEqual({
      code: 2,
      out: body("unknown option '--bogus'"),
      err: "agentcom: E_USAGE: unknown option '--bogus'\n",
    });
    // commander's hint, on a line of its own, joins the one line.
    expect(await run(['task', 'add', '--payload', '1', '--quue', 'q'])).toEqual({
      code: 2,
      out: '',
      err: "agentcom: E_USAGE: unknown option '--quue' (Did you mean --queue?)\n",
    });
    expect(await run(['task', 'get', '--json'])).toEqual({
      code: 2,
      out: body("missing required argument 'id'"),
      err: "agentcom: E_USAGE: missing required argument 'id'\n",
    });
  });

  it('refuses an id the hub would refuse before sending anything (URL would turn `.` into another route)', async () => {
    let requests = 0;
    const answerAnything: RequestListener = (_request, response) => {
      requests++;
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    };
    await withFakeHub(answerAnything, async (env) => {
      for (const args of [
        ['task', 'get', '.'],
        ['task', 'cancel', '..'],
        ['task', 'logs', 'a/b'],
        ['agent', 'get', '.'],
        ['agent', 'drain', '..'],
      ]) {
        expect({ args, result: await run(args, env) }).toMatchObject({
          args,
          result: { code: 2, err: expect.stringMatching(/^agentcom: E_USAGE: (task|agent) id "/) },
        });
      }
      expect(requests).toBe(0);
    });
  });

  it("shows an agent's control characters escaped, never raw: text and --json", async () => {
    // a title change, a clear screen, a bell, and a C1 CSI (U+009B) in a task's log lines
    const lines = ['\u001b]0;pwned\u0007title', 'wipe\u001b[2J', 'c1 \u009b31m red', 'tab\tok'];
    const answerLogs: RequestListener = (_request, response) => {
      response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ logs: lines, count: lines.length }));
    };
    await withFakeHub(answerLogs, async (env) => {
      const text = await run(['task', 'logs', 't1'], env);
      expect(text.code).toBe(0);
      expect(text.out).toBe('\\x1b]0;pwned\\x07title\nwipe\\x1b[2J\nc1 \\x9b31m red\ntab\tok\n');
      const json = await run(['--json', 'task', 'logs', 't1'], env);
      // eslint-disable-next-line no-control-regex
      expect(json.out).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
      expect(JSON.parse(json.out)).toEqual({ logs: lines, count: lines.length });
    });
  });

  describe('task list --all', () => {
    const runningTask = (id: string) => task({ id, state: 'running', attempt: 1 });
    /** A hub whose pages are `pages(cursor, how many times that cursor was asked)`. */
    const withPages = async (
      pages: (cursor: string, times: number) => { tasks: unknown[]; nextCursor?: string },
      body: (env: Record<string, string>, asked: string[]) => Promise<void>,
    ): Promise<void> => {
      const asked: string[] = [];
      const answerPages: RequestListener = (request, response) => {
        const cursor = new URL(request.url ?? '/', 'http://x').searchParams.get('cursor') ?? '';
        asked.push(cursor);
        const times = asked.filter((c) => c === cursor).length;
        response
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify(pages(cursor, times)));
      };
      await withFakeHub(answerPages, (env) => body(env, asked));
    };

    it('follows a cursor again when the hub started a list over, and shows each task once', async () => {
      await withPages(
        (cursor, times) =>
          cursor === ''
            ? { tasks: [runningTask('t1')], nextCursor: 'c1' }
            : cursor === 'c1' && times === 1
              ? { tasks: [runningTask('t2')], nextCursor: 'c2' }
              : cursor === 'c2'
                ? { tasks: [runningTask('t1')], nextCursor: 'c1' } // started over: page 1 again
                : { tasks: [runningTask('t5'), runningTask('t6')] },
        async (env, asked) => {
          const result = await run(['--json', 'task', 'list', '--all'], env);
          expect(result.code).toBe(0);
          const listed = (JSON.parse(result.out) as { tasks: Array<{ id: string }> }).tasks;
          expect(listed.map((t) => t.id)).toEqual(['t1', 't2', 't5', 't6']);
          expect(asked).toEqual(['', 'c1', 'c2', 'c1']);
        },
      );
    });

    it('gives up with E_LISTING_UNSTABLE (exit 1) when it keeps being sent back', async () => {
      await withPages(
        () => ({ tasks: [runningTask('t1')], nextCursor: 'c1' }),
        async (env, asked) => {
          expect(await run(['task', 'list', '--all'], env)).toMatchObject({
            code: 1,
            out: '',
            err: expect.stringMatching(/^agentcom: E_LISTING_UNSTABLE: the listing started over/),
          });
          expect(asked).toEqual(['', 'c1', 'c1', 'c1']);
        },
      );
    });
  });

  describe('agents, page by page', () => {
    const agent = (agentId: string) => agentView({ agentId });
    /** A hub answering `GET /v1/agents` with `pages(cursor)`; the queries it was asked, in order. */
    const withAgentPages = async (
      pages: (cursor: string) => { agents: unknown[]; nextCursor?: string },
      body: (env: Record<string, string>, asked: string[]) => Promise<void>,
    ): Promise<void> => {
      const asked: string[] = [];
      const answerPages: RequestListener = (request, response) => {
        const url = new URL(request.url ?? '/', 'http://x');
        asked.push(url.search);
        response
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify(pages(url.searchParams.get('cursor') ?? '')));
      };
      await withFakeHub(answerPages, (env) => body(env, asked));
    };
    const threePages = (cursor: string) =>
      cursor === ''
        ? { agents: [agent('B-1'), agent('a-2')], nextCursor: 'a-2' }
        : cursor === 'a-2'
          ? { agents: [agent('a-3')], nextCursor: 'a-3' }
          : { agents: [agent('b-4')] };

    it('`agents` follows nextCursor to the last page, asking for the largest pages', async () => {
      await withAgentPages(threePages, async (env, asked) => {
        const json = await run(['--json', 'agents'], env);
        expect(json.code).toBe(0);
        const listed = (JSON.parse(json.out) as { agents: Array<{ agentId: string }> }).agents;
        expect(listed.map((a) => a.agentId)).toEqual(['B-1', 'a-2', 'a-3', 'b-4']);
        expect(asked).toEqual(['?limit=1000', '?limit=1000&cursor=a-2', '?limit=1000&cursor=a-3']);
        // the table in the hub's order (code units: `B` before `a`), one row per agent
        const table = await run(['agents'], env);
        expect(table.out.split('\n').map((line) => line.split(' ')[0])).toEqual([
          'AGENT',
          'B-1',
          'a-2',
          'a-3',
          'b-4',
          '',
        ]);
      });
    });

    it('`agents --watch` shows every page at each refresh', async () => {
      await withAgentPages(threePages, async (env, asked) => {
        const watch = ['--watch', '--watch-count', '2', '--interval-s', '0.01'];
        const watched = await run(['--json', 'agents', ...watch], env);
        expect(watched.code).toBe(0);
        const refreshes = watched.out
          .trim()
          .split('\n')
          .map((line) => (JSON.parse(line) as { agents: Array<{ agentId: string }> }).agents);
        expect(refreshes.map((agents) => agents.map((a) => a.agentId))).toEqual([
          ['B-1', 'a-2', 'a-3', 'b-4'],
          ['B-1', 'a-2', 'a-3', 'b-4'],
        ]);
        expect(asked).toHaveLength(6);
      });
    });

    it('gives up with E_LISTING_UNSTABLE (exit 1) on a cursor sent twice, rather than loop', async () => {
      await withAgentPages(
        (cursor) => ({ agents: [agent(cursor || 'a-1')], nextCursor: 'a-1' }),
        async (env, asked) => {
          expect(await run(['agents'], env)).toMatchObject({
            code: 1,
            out: '',
            err: expect.stringMatching(
              /^agentcom: E_LISTING_UNSTABLE: the hub sent the cursor "a-1" twice/,
            ),
          });
          expect(asked).toEqual(['?limit=1000', '?limit=1000&cursor=a-1']);
        },
      );
    });
  });

  it.each([
    ['an empty object', '{}'],
    ['null', 'null'],
    ['an array', '[]'],
    ["another service's JSON", '{"status":"ok","agents":3,"tasks":"none"}'],
  ])(
    'refuses a 2xx answer of %s as no hub: exit 5, E_UNREACHABLE, one JSON document with --json',
    async (_, answer) => {
      // a real server at the URL that answers JSON, but not the hub's
      const answerNotTheHub: RequestListener = (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' }).end(answer);
      };
      await withFakeHub(answerNotTheHub, async (env) => {
        for (const command of [
          ['task', 'add', '--payload', '1'],
          ['task', 'get', 't1'],
          ['task', 'list'],
          ['task', 'list', '--all'],
          ['task', 'cancel', 't1'],
          ['task', 'retry', 't1'],
          ['task', 'logs', 't1'],
          ['agents'],
          ['agent', 'get', 'a1'],
          ['agent', 'token', 'create', 'a1'],
          ['agent', 'token', 'revoke', 'a1'],
          ['agent', 'drain', 'a1'],
          ['agent', 'resume', 'a1'],
          ['queues'],
        ]) {
          for (const json of [true, false]) {
            const args = json ? ['--json', ...command] : command;
            const result = await run(args, env).catch((err: unknown) => ({ thrown: String(err) }));
            const message = expect.stringMatching(/with JSON that is not the hub's answer to it/);
            expect({ args, result }).toEqual({
              args,
              result: {
                code: 5,
                out: json ? expect.any(String) : '',
                err: expect.stringMatching(/^agentcom: E_UNREACHABLE: the server at .*\n$/),
              },
            });
            if (json) {
              const { out } = result as { out: string };
              expect(JSON.parse(out)).toEqual({ error: { code: 'E_UNREACHABLE', message } });
            }
          }
        }
      });
    },
  );

  it('prints help and the version as they are, exit 0', async () => {
    const help = await run(['--json', '--help']);
    expect(help).toMatchObject({ code: 0, err: '' });
    expect(help.out).toMatch(/^Usage: agentcom /);
    expect(await run(['task', 'add', '--help'])).toMatchObject({
      code: 0,
      out: expect.stringContaining('--payload <json>'),
      err: '',
    });
    expect(await run(['--version'])).toEqual({ code: 0, out: `${SIDECAR_VERSION}\n`, err: '' });
  });
});

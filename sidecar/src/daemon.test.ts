import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PROTOCOL_VERSION, type ClientEventName, type TaskAssign } from '@agentcom/shared';
import type { SidecarConfig } from './config';
import type { Logger } from './logger';
import { startDaemon, type Daemon, type DaemonEvents } from './daemon';
import { EXIT_CODES } from './exit-codes';
import { INTERRUPTED_ERROR, STATE_FILE_NAME } from './outbox/outbox';
import { StateFileError } from './outbox/state-file-error';
import { StateDirInUseError } from './outbox/state-lock';
import { ipcRequest } from './ipc/ipc-client';
import { FakeHub, type ReceivedEvent, type Responder } from './test-support/fake-hub';
import { recordingLogger, testLogger } from './test-support/logger';
import { makeTempDir } from './test-support/temp-dir';
import { isProcessGone, waitUntil } from './test-support/process';
import { identifyProcess, readProcStat } from './runner/process-identity';
import { SIDECAR_VERSION } from './version';
import { DELIVERY_WAIT_MS } from './task/drain';

let dir: string;
let cleanup: () => Promise<void>;
let hubs: FakeHub[];
let daemons: Daemon[];

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
  hubs = [];
  daemons = [];
});
afterEach(async () => {
  await Promise.all(daemons.map((daemon) => daemon.stop()));
  await Promise.all(hubs.map((hub) => hub.stop()));
  await cleanup();
});

async function startHub(): Promise<FakeHub> {
  const hub = new FakeHub();
  await hub.start();
  hubs.push(hub);
  return hub;
}

/** A handler that runs until the test creates `<dir>/release-<taskId>`, then prints its result. */
const GATED_HANDLER = `
  const fs = require('node:fs');
  let input = '';
  process.stdin.on('data', (chunk) => (input += chunk));
  process.stdin.on('end', () => {
    const task = JSON.parse(input);
    fs.appendFileSync(process.env.RUNS_FILE, task.id + '\\n');
    console.log('started ' + task.id);
    const release = process.env.GATE_DIR + '/release-' + task.id;
    const timer = setInterval(() => {
      if (!fs.existsSync(release)) return;
      clearInterval(timer);
      if (task.payload && task.payload.fail) { console.error('it broke'); process.exit(7); }
      console.log(JSON.stringify({ done: task.id, payload: task.payload }));
    }, 10);
  });
`;

function config(urls: string[], overrides: Partial<SidecarConfig> = {}): SidecarConfig {
  return {
    hubUrls: urls,
    agentId: 'agent-1',
    token: 'agent-secret',
    queues: ['default', 'gpu'],
    labels: {},
    runner: { kind: 'exec', argv: [process.execPath, '-e', GATED_HANDLER] },
    stateDir: join(dir, 'state'),
    heartbeatMs: 60_000,
    drainGraceMs: 5000,
    killGraceMs: 300,
    ackTimeoutMs: 1000,
    failoverAttempts: 1,
    handshakeTimeoutMs: 20_000,
    logLevel: 'silent',
    childEnv: { PATH: process.env.PATH ?? '', GATE_DIR: dir, RUNS_FILE: join(dir, 'runs') },
    ...overrides,
  };
}

async function start(
  urls: string[],
  overrides: Partial<SidecarConfig> = {},
  logger: Logger = testLogger(),
): Promise<Daemon> {
  const daemon = await startDaemon(config(urls, overrides), {
    logger,
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    refusedRetryMs: 100,
  });
  daemons.push(daemon);
  return daemon;
}

function next<E extends keyof DaemonEvents>(daemon: Daemon, event: E): Promise<DaemonEvents[E][0]> {
  return once(daemon.events, event).then((args) => args[0] as DaemonEvents[E][0]);
}

type HubSocket = Awaited<ReturnType<FakeHub['connection']>>['socket'];

/** A new hub, a daemon started against it, and the hub's side of their connection. */
async function connected(
  overrides: Partial<SidecarConfig> = {},
  logger?: Logger,
): Promise<{ hub: FakeHub; daemon: Daemon; socket: HubSocket }> {
  const hub = await startHub();
  const daemon = await start([hub.url], overrides, logger);
  const { socket } = await hub.connection();
  return { hub, daemon, socket };
}

/** As {@link connected}, with task t1 assigned and its handler running (its first log line sent). */
async function running(
  overrides: Partial<SidecarConfig> = {},
  logger?: Logger,
): Promise<{ hub: FakeHub; daemon: Daemon; socket: HubSocket }> {
  const started = await connected(overrides, logger);
  await assignT1AndAwait(started.hub, started.socket, 'task:log');
  return started;
}

/** Assigns task t1 over `socket` and resolves with the first `event` the hub receives after. */
async function assignT1AndAwait(
  hub: FakeHub,
  socket: HubSocket,
  event: ClientEventName,
): Promise<ReceivedEvent> {
  const received = hub.nextEvent(event);
  socket.emit('task:assign', assignment('t1'));
  return received;
}

/** A responder that refuses every `event` with `code`, and answers the others as usual. */
function refusing(event: string, code: string, message: string): Responder {
  return (received) => (received.event === event ? { ok: false, code, message } : undefined);
}

/** A responder that leaves every `event` unanswered (no ack), and answers the others as usual. */
function unanswered(event: string): Responder {
  return (received) => (received.event === event ? 'no-ack' : undefined);
}

function assignment(taskId: string, overrides: Partial<TaskAssign> = {}): TaskAssign {
  return {
    task: { id: taskId, queue: 'default', payload: { n: 1 }, createdAt: Date.now() },
    token: `token-${taskId}`,
    attempt: 1,
    attempts: 3,
    ...overrides,
  };
}

async function release(taskId: string): Promise<void> {
  await writeFile(join(dir, `release-${taskId}`), '');
}

async function runs(): Promise<string[]> {
  const text = await readFile(join(dir, 'runs'), 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line !== '');
}

async function stateFile(): Promise<unknown> {
  return JSON.parse(await readFile(join(dir, 'state', STATE_FILE_NAME), 'utf8'));
}

/**
 * Stops `hub` and, once the daemon saw it go, lets task t1 end: its report waits in the state file
 * for a hub.
 */
async function finishWhileHubAway(hub: FakeHub, daemon: Daemon): Promise<void> {
  const away = next(daemon, 'disconnected');
  await hub.stop();
  await away;
  const finished = next(daemon, 'finished');
  await release('t1');
  await finished;
}

/** The state file a previous sidecar process would have left (version 1). */
async function leaveStateFile(state: { current?: object; outbox?: object[] }): Promise<void> {
  await mkdir(join(dir, 'state'), { recursive: true, mode: 0o700 });
  await writeFile(
    join(dir, 'state', STATE_FILE_NAME),
    JSON.stringify({ version: 1, outbox: [], ...state }),
  );
}

/**
 * Once the log shows the accept of t1 waiting (`waiting`), stops the daemon: the stop must not
 * wait that out (well under a second), and the task is dropped unaccepted.
 */
async function stopWhileWaiting(
  daemon: Daemon,
  entries: () => Array<{ msg?: unknown }>,
  waiting: RegExp,
  what: string,
): Promise<void> {
  const dropped = next(daemon, 'dropped');
  await waitUntil(
    () => entries().some((entry) => waiting.test(String(entry.msg))),
    `the accept ${what}`,
    5000,
  );
  const stopping = performance.now();
  await daemon.stop();
  expect(performance.now() - stopping).toBeLessThan(1000);
  expect(await dropped).toEqual({ taskId: 't1', reason: 'not_accepted' });
}

describe('daemon', () => {
  describe('when it connects', () => {
    it('announces its identity, protocol, queues and version, and no task', async () => {
      const hub = await startHub();
      await start([hub.url]);
      const { auth } = await hub.connection();
      expect(auth).toEqual({
        agentId: 'agent-1',
        token: 'agent-secret',
        protocol: PROTOCOL_VERSION,
        queues: ['default', 'gpu'],
        sidecarVersion: SIDECAR_VERSION,
      });
    });
  });

  describe('when the hub assigns a task', () => {
    it('accepts it, runs the command, sends its output as logs and completes it with the result', async () => {
      const { hub, daemon, socket } = await connected();

      const assigned = next(daemon, 'assigned');
      const completed = hub.nextEvent('task:complete');
      const reported = next(daemon, 'reported');
      socket.emit('task:assign', assignment('t1'));
      expect(await assigned).toEqual({ taskId: 't1', token: 'token-t1', attempt: 1 });
      expect(daemon.state().current).toMatchObject({ taskId: 't1', state: 'working' });
      await hub.nextEvent('task:log', (message) =>
        JSON.stringify(message.lines).includes('started t1'),
      );
      await release('t1');

      expect((await completed).message).toEqual({
        taskId: 't1',
        token: 'token-t1',
        result: { done: 't1', payload: { n: 1 } },
      });
      expect(await reported).toEqual({
        taskId: 't1',
        type: 'complete',
        outcome: 'acked',
        code: undefined,
      });
      expect(hub.messages('task:accept')).toEqual([{ taskId: 't1', token: 'token-t1' }]);
      expect(daemon.state()).toMatchObject({ current: undefined, outbox: [] });
      expect(await stateFile()).toEqual({ version: 1, outbox: [] });
    });

    it('reports a failing command with task:fail and its stderr', async () => {
      const { hub, socket } = await connected();
      const failed = hub.nextEvent('task:fail');
      socket.emit(
        'task:assign',
        assignment('t1', {
          task: { id: 't1', queue: 'default', payload: { fail: true }, createdAt: 1 },
        }),
      );
      await release('t1');
      expect((await failed).message).toEqual({
        taskId: 't1',
        token: 'token-t1',
        error: 'exit code 7: it broke',
        retryable: true,
        kind: 'error',
      });
    });

    it('sends an unanswered accept again and runs the task once it is acknowledged', async () => {
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 200 });
      let accepts = 0;
      hub.respond = ({ event }) =>
        event === 'task:accept' && ++accepts === 1 ? 'no-ack' : undefined;
      const completed = hub.nextEvent('task:complete');
      const reported = next(daemon, 'reported');
      socket.emit('task:assign', assignment('t1'));
      await release('t1');
      expect((await completed).message).toMatchObject({ taskId: 't1', token: 'token-t1' });
      expect(await reported).toMatchObject({ taskId: 't1', outcome: 'acked' });
      expect(accepts).toBe(2);
      expect(await runs()).toEqual(['t1']);
      expect(daemon.state().current).toBeUndefined();
    });

    it('sends an accept that its closed connection never answered again on the next connection', async () => {
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 2000 });
      hub.respond = unanswered('task:accept');
      await assignT1AndAwait(hub, socket, 'task:accept');
      // the connection closes with the accept unanswered; the new one answers
      hub.respond = () => undefined;
      const reconnected = hub.connection({ fresh: true });
      const secondAccept = hub.nextEvent('task:accept');
      const reported = next(daemon, 'reported');
      socket.disconnect(true);
      const { auth } = await reconnected;
      expect(auth.current).toEqual({ taskId: 't1', token: 'token-t1', state: 'working' });
      const resent = await secondAccept;
      expect(resent.socket.id).not.toBe(socket.id);
      await release('t1');
      expect(await reported).toMatchObject({ taskId: 't1', outcome: 'acked' });
      expect(await runs()).toEqual(['t1']);
    });

    it('gives the task up when no accept is ever answered', async () => {
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 200 });
      hub.respond = unanswered('task:accept');
      const dropped = next(daemon, 'dropped');
      socket.emit('task:assign', assignment('t1'));
      expect(await dropped).toEqual({ taskId: 't1', reason: 'not_accepted' });
      expect(hub.received.filter((r) => r.event === 'task:accept')).toHaveLength(3);
      expect(await runs()).toEqual([]);
    });

    it.each([
      ['drops the task at the first refusal that is not retryable', 'E_ASSIGNMENT_SUPERSEDED', 1],
      ['gives the task up when the retryable refusals of the accept go on', 'E_UNAVAILABLE', 3],
    ])('%s, without running it (%s: %i accepts)', async (_, code, accepts) => {
      const { hub, daemon, socket } = await connected();
      hub.respond = refusing('task:accept', code, 'refused');
      const dropped = next(daemon, 'dropped');
      socket.emit('task:assign', assignment('t1'));
      expect(await dropped).toEqual({ taskId: 't1', reason: 'not_accepted' });
      expect(hub.messages('task:accept')).toHaveLength(accepts);
      expect(await runs()).toEqual([]);
      expect(daemon.state().current).toBeUndefined();
    });

    it('sends an accept refused with a retryable code again after a pause, and runs the task', async () => {
      const ackTimeoutMs = 1000;
      const { hub, daemon, socket } = await connected({ ackTimeoutMs });
      const refusals = ['E_RATE_LIMITED', 'E_UNAVAILABLE'];
      const acceptedAt: number[] = [];
      hub.respond = ({ event }) => {
        if (event !== 'task:accept') return undefined;
        acceptedAt.push(performance.now());
        const code = refusals.shift();
        return code === undefined ? undefined : { ok: false, code, message: 'not now' };
      };
      const settled = Promise.race([next(daemon, 'accepted'), next(daemon, 'dropped')]);
      const completed = hub.nextEvent('task:complete');
      socket.emit('task:assign', assignment('t1'));
      expect(await settled).toEqual({ taskId: 't1' });
      await release('t1');
      expect((await completed).message).toMatchObject({ taskId: 't1', token: 'token-t1' });
      expect(await runs()).toEqual(['t1']);
      expect(acceptedAt).toHaveLength(3);
      // Paused at least half of a tenth of ackTimeoutMs after the first refusal, of a fifth after the second.
      expect(acceptedAt[1]! - acceptedAt[0]!).toBeGreaterThanOrEqual(ackTimeoutMs * 0.05 - 1);
      expect(acceptedAt[2]! - acceptedAt[1]!).toBeGreaterThanOrEqual(ackTimeoutMs * 0.1 - 1);
    });

    it('does not send a refused accept again once the hub stopped waiting for it', async () => {
      // The first accept is left unanswered for all of ackTimeoutMs: the hub has put the task
      // back by the time the second is refused E_UNAVAILABLE, so a third would come too late.
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 300 });
      let accepts = 0;
      hub.respond = ({ event }) => {
        if (event !== 'task:accept') return undefined;
        return ++accepts === 1 ? 'no-ack' : { ok: false, code: 'E_UNAVAILABLE', message: 'redis' };
      };
      const dropped = next(daemon, 'dropped');
      socket.emit('task:assign', assignment('t1'));
      expect(await dropped).toEqual({ taskId: 't1', reason: 'not_accepted' });
      expect(accepts).toBe(2);
      expect(await runs()).toEqual([]);
    });

    it('stops waiting to send a refused accept again when it is stopped', async () => {
      const { logger, entries } = recordingLogger();
      // Pauses of 1-3 s at this ackTimeoutMs.
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 20_000 }, logger);
      hub.respond = refusing('task:accept', 'E_UNAVAILABLE', 'redis');
      socket.emit('task:assign', assignment('t1'));
      await stopWhileWaiting(daemon, entries, /sending it again after a pause/, 'is paused');
      expect(hub.messages('task:accept')).toHaveLength(1);
    });

    it('stops waiting for a connection to send an unanswered accept again when it is stopped', async () => {
      const { logger, entries } = recordingLogger();
      // Without the stop, it would wait up to this ackTimeoutMs for a connection.
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 20_000 }, logger);
      hub.respond = unanswered('task:accept');
      await assignT1AndAwait(hub, socket, 'task:accept');
      await hub.stop(); // the accept's connection drops unanswered, and no hub is left
      await stopWhileWaiting(
        daemon,
        entries,
        /not acknowledged; sending it again/,
        'waits for a connection',
      );
      expect(hub.messages('task:accept')).toHaveLength(1);
      expect(await runs()).toEqual([]);
    });

    it('ignores an invalid assignment', async () => {
      const { daemon, socket } = await connected();
      const assigned = next(daemon, 'assigned');
      socket.emit('task:assign', { ...assignment('bad'), token: 42 } as unknown as TaskAssign);
      socket.emit('task:assign', assignment('t2'));
      expect((await assigned).taskId).toBe('t2');
    });

    it('does not run a task twice when the hub assigns it again, and confirms it again', async () => {
      const { hub, daemon, socket } = await connected();
      const accepted = next(daemon, 'accepted');
      socket.emit('task:assign', assignment('t1'));
      await accepted;
      await hub.nextEvent('task:log');

      const secondAccept = hub.nextEvent('task:accept');
      socket.emit('task:assign', assignment('t1'));
      expect((await secondAccept).message).toEqual({ taskId: 't1', token: 'token-t1' });
      const reported = next(daemon, 'reported');
      await release('t1');
      await reported;
      expect(await runs()).toEqual(['t1']);
    });

    it('ignores another task while one runs', async () => {
      const { hub, daemon, socket } = await connected();
      const accepted = next(daemon, 'accepted');
      socket.emit('task:assign', assignment('t1'));
      await accepted;
      socket.emit('task:assign', assignment('t2'));
      const reported = next(daemon, 'reported');
      await release('t1');
      await reported;
      expect(hub.messages('task:accept').map((message) => message.taskId)).toEqual(['t1']);
      expect(await runs()).toEqual(['t1']);
    });
  });

  describe('when the hub answers with a malformed ack', () => {
    it('takes a heartbeat ack with a state it cannot read as no answer; status still answers', async () => {
      const { hub, daemon } = await connected({ heartbeatMs: 100 });
      hub.respond = ({ event }) =>
        event === 'agent:heartbeat' ? { ok: true, state: { x: 1 }, abort: 'yes' } : undefined;
      await hub.nextEvent('agent:heartbeat');
      await hub.nextEvent('agent:heartbeat'); // the first one's ack was read before it was sent
      const status = await ipcRequest(daemon.socketPath, { type: 'status' }, 5000);
      expect(status).toMatchObject({ ok: true, status: { agentState: null } });
    });
  });

  describe('when the hub takes the task back', () => {
    it('kills the task and fails it, not retryable, on task:cancel "cancelled"', async () => {
      const { hub, socket } = await running({ heartbeatMs: 100 });
      const failed = hub.nextEvent('task:fail');
      socket.emit('task:cancel', { taskId: 't1', reason: 'cancelled' });
      expect((await failed).message).toEqual({
        taskId: 't1',
        token: 'token-t1',
        error: 'cancelled by the hub',
        retryable: false,
        kind: 'cancelled',
      });
    });

    it('kills the task and reports nothing on task:cancel "lease_lost"', async () => {
      const { hub, daemon, socket } = await running({ heartbeatMs: 100 });
      const dropped = next(daemon, 'dropped');
      socket.emit('task:cancel', { taskId: 't1', reason: 'lease_lost' });
      expect(await dropped).toEqual({ taskId: 't1', reason: 'lease_lost' });
      expect(daemon.state()).toMatchObject({ current: undefined, outbox: [] });
      expect(hub.messages('task:complete')).toEqual([]);
      expect(hub.messages('task:fail')).toEqual([]);
    });

    it('ignores a task:cancel naming an earlier assignment of the task, and takes one naming its own', async () => {
      const { hub, daemon, socket } = await running({ heartbeatMs: 100 });
      const dropped = next(daemon, 'dropped');
      socket.emit('task:cancel', { taskId: 't1', reason: 'superseded', token: 'token-earlier' });
      socket.emit('task:cancel', { taskId: 't1', reason: 'lease_lost', token: 'token-t1' });
      expect(await dropped).toEqual({ taskId: 't1', reason: 'lease_lost' });
      expect(hub.messages('task:fail')).toEqual([]);
    });

    it('takes the retry the hub pushes right after taking the task back, once the old handler is gone', async () => {
      // the hub's ack-timeout or backstop path: cancel the assignment, free the agent, and hand it
      // the same task again (a new token) while its handler is still being stopped
      const { hub, socket } = await running({ heartbeatMs: 100 });
      const retried = hub.nextEvent('task:accept', (message) => message.token === 'token-t1-b');
      socket.emit('task:cancel', { taskId: 't1', reason: 'superseded', token: 'token-t1' });
      socket.emit('task:assign', assignment('t1', { token: 'token-t1-b', attempt: 2 }));
      expect((await retried).message).toEqual({ taskId: 't1', token: 'token-t1-b' });
      await release('t1');
      await hub.nextEvent('task:complete');
      expect(await runs()).toEqual(['t1', 't1']);
      expect(hub.messages('task:complete')).toEqual([
        { taskId: 't1', token: 'token-t1-b', result: { done: 't1', payload: { n: 1 } } },
      ]);
    });

    it('kills the task and reports nothing when a heartbeat ack says abort', async () => {
      const { hub, daemon } = await running({ heartbeatMs: 100 });
      const heartbeat = hub.nextEvent('agent:heartbeat', (message) => message.taskId === 't1');
      hub.respond = ({ event }) =>
        event === 'agent:heartbeat' ? { ok: true, state: 'idle', abort: true } : undefined;
      expect((await heartbeat).message).toEqual({ taskId: 't1', token: 'token-t1' });
      expect(await next(daemon, 'dropped')).toEqual({ taskId: 't1', reason: 'lease_lost' });
      expect(hub.messages('task:fail')).toEqual([]);
    });
  });

  describe('when the last log lines of a finished task wait for the hub', () => {
    it('takes the next task as soon as the report is stored', async () => {
      // e.g. a reconnect replayed the report and the hub pushed the next task at once
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 5000 });
      hub.respond = unanswered('task:log');
      const finished = next(daemon, 'finished');
      socket.emit('task:assign', assignment('t1'));
      await hub.nextEvent('task:log');
      await release('t1');
      await finished;
      const accepted = hub.nextEvent('task:accept', (message) => message.taskId === 't2');
      socket.emit('task:assign', assignment('t2'));
      expect((await accepted).message).toEqual({ taskId: 't2', token: 'token-t2' });
      await hub.nextEvent('task:log', (message) => message.taskId === 't2');
      expect(await runs()).toEqual(['t1', 't2']);
    });
  });

  describe('when the hub refuses log lines', () => {
    it('waits for the flush delay before sending the next batch, however many lines wait', async () => {
      const flushMs = 250; // the batcher's default
      const { hub, socket } = await connected({
        runner: {
          kind: 'exec',
          argv: [
            process.execPath,
            '-e',
            `process.stdout.write(Array.from({ length: 300 }, (_, i) => 'line ' + i + '\\n').join(''))`,
          ],
        },
      });
      const logsAt: number[] = [];
      hub.respond = ({ event }) => {
        if (event !== 'task:log') return undefined;
        logsAt.push(performance.now());
        return logsAt.length === 1
          ? { ok: false, code: 'E_RATE_LIMITED', message: 'too many events in flight' }
          : undefined;
      };
      const completed = hub.nextEvent('task:complete');
      socket.emit('task:assign', assignment('t1'));
      await completed;
      // The 300 lines came at once: without the pause the second batch left on the refusal.
      expect(logsAt).toHaveLength(3);
      expect(logsAt[1]! - logsAt[0]!).toBeGreaterThanOrEqual(flushMs - 1);
      expect(hub.messages('task:log').map(({ lines }) => (lines as string[])[0])).toEqual([
        'line 0',
        'line 100',
        'line 200',
      ]);
    });
  });

  describe('when the handler exits', () => {
    it('stores its result durably at once, while its last log lines still wait for the hub', async () => {
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 8000 });
      // A hung replica: the connection stays up, task:log is never answered.
      hub.respond = unanswered('task:log');
      await assignT1AndAwait(hub, socket, 'task:log');
      const finished = next(daemon, 'finished');
      await release('t1');
      // What a kill -9 leaves from now on: the result, not a task `working` that the restart
      // reports as interrupted and the hub runs again.
      const readState = (): unknown =>
        JSON.parse(readFileSync(join(dir, 'state', STATE_FILE_NAME), 'utf8'));
      await waitUntil(
        () => JSON.stringify(readState()).includes('"state":"finished"'),
        'the result is in the state file',
        3000,
      );
      expect(readState()).toMatchObject({
        current: { taskId: 't1', state: 'finished' },
        outbox: [{ type: 'complete', taskId: 't1', result: { done: 't1' } }],
      });
      await finished;
      expect(hub.messages('task:complete')).toEqual([]);
    });
  });

  describe('when the report cannot be delivered at once', () => {
    it('keeps it while the hub answers a retryable code, then sends it again', async () => {
      const { hub, daemon, socket } = await connected({ ackTimeoutMs: 200 });
      let refusals = 2;
      hub.respond = ({ event }) =>
        event === 'task:complete' && refusals-- > 0
          ? { ok: false, code: 'E_UNAVAILABLE', message: 'busy' }
          : undefined;
      const finished = next(daemon, 'finished');
      const reported = next(daemon, 'reported');
      socket.emit('task:assign', assignment('t1'));
      await release('t1');
      await finished;
      expect(daemon.state().outbox).toHaveLength(1);
      expect(await reported).toMatchObject({ outcome: 'acked' });
      expect(hub.messages('task:complete')).toHaveLength(3);
      expect(daemon.state().outbox).toEqual([]);
    });

    it('removes it when the hub rejects it as superseded', async () => {
      const { hub, daemon, socket } = await connected();
      hub.respond = refusing('task:complete', 'E_ASSIGNMENT_SUPERSEDED', 'late');
      const reported = next(daemon, 'reported');
      socket.emit('task:assign', assignment('t1'));
      await release('t1');
      expect(await reported).toEqual({
        taskId: 't1',
        type: 'complete',
        outcome: 'rejected',
        code: 'E_ASSIGNMENT_SUPERSEDED',
      });
      expect(daemon.state()).toMatchObject({ current: undefined, outbox: [] });
    });

    it('keeps the task through a hub restart, stores the report while away and replays it on reconnect', async () => {
      const { hub, daemon } = await running();

      // The hub goes away mid-task and comes back: the handshake re-announces the running task.
      const disconnected = next(daemon, 'disconnected');
      await hub.stop();
      await disconnected;
      const reconnected = hub.connection({ fresh: true });
      await hub.start();
      expect((await reconnected).auth.current).toEqual({
        taskId: 't1',
        token: 'token-t1',
        state: 'working',
      });

      // Away again; the task ends meanwhile: its report waits in the state file.
      await finishWhileHubAway(hub, daemon);
      expect(await stateFile()).toEqual({
        version: 1,
        current: { taskId: 't1', token: 'token-t1', attempt: 1, state: 'finished' },
        outbox: [
          {
            type: 'complete',
            taskId: 't1',
            token: 'token-t1',
            result: { done: 't1', payload: { n: 1 } },
          },
        ],
      });

      const back = hub.connection({ fresh: true });
      const replayed = hub.nextEvent('task:complete');
      const reported = next(daemon, 'reported');
      await hub.start();
      expect((await back).auth.current).toEqual({
        taskId: 't1',
        token: 'token-t1',
        state: 'finished',
      });
      expect((await replayed).message).toMatchObject({ taskId: 't1', token: 'token-t1' });
      await reported;
      expect(await stateFile()).toEqual({ version: 1, outbox: [] });
    });
  });

  describe('after the sidecar itself restarts', () => {
    it('frees its state dir when it cannot start', async () => {
      await expect(start([])).rejects.toThrow('no hub URL');
      expect(existsSync(join(dir, 'state', 'sidecar.lock'))).toBe(false);
    });

    it('reports a task the previous process left running as a retryable failure, first thing', async () => {
      await leaveStateFile({
        current: { taskId: 't9', token: 'token-t9', attempt: 2, state: 'working' },
        outbox: [{ type: 'complete', taskId: 't8', token: 'token-t8', result: 8 }],
      });
      const hub = await startHub();
      const firstEvents: string[] = [];
      hub.on('event', ({ event, message }) =>
        firstEvents.push(`${event} ${String(message.taskId)}`),
      );
      const connected = hub.connection({ fresh: true });
      const failed = hub.nextEvent('task:fail');
      await start([hub.url]);
      expect((await connected).auth.current).toEqual({
        taskId: 't9',
        token: 'token-t9',
        state: 'finished',
      });
      expect((await failed).message).toEqual({
        taskId: 't9',
        token: 'token-t9',
        error: INTERRUPTED_ERROR,
        retryable: true,
        kind: 'error',
      });
      expect(firstEvents.slice(0, 2)).toEqual(['task:complete t8', 'task:fail t9']);
    });

    it('records the running handler in the state file: its pid, start time and boot', async () => {
      const { hub, daemon, socket } = await connected();
      const assigned = next(daemon, 'assigned');
      socket.emit('task:assign', assignment('t1'));
      await assigned;
      let recorded: { pid: number; startTime?: number; bootId?: string } | undefined;
      await waitUntil(() => {
        const current = (
          JSON.parse(readFileSync(join(dir, 'state', STATE_FILE_NAME), 'utf8')) as {
            current?: { process?: typeof recorded };
          }
        ).current;
        recorded = current?.process;
        return recorded !== undefined;
      }, 'the state file names the task process');
      const pid = recorded?.pid ?? 0;
      expect(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')).toContain(
        'AGENTCOM_TASK_ID=t1',
      );
      expect(readProcStat(pid)?.pgrp).toBe(pid);
      expect(recorded).toEqual(identifyProcess(pid));
      expect(daemon.state().current).toMatchObject({ state: 'working', process: recorded });
      const completed = hub.nextEvent('task:complete');
      await release('t1');
      await completed;
    });

    it('stops the handler process group a killed sidecar left running before reporting its task', async () => {
      // The orphan: a group like the exec runner starts, a leader with a child, left running.
      const orphan = spawn('sh', ['-c', "trap '' TERM; sleep 60 & echo $!; sleep 60"], {
        detached: true,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      const pid = orphan.pid;
      // (never 0 below: kill(-0) would signal the test's own process group)
      if (pid === undefined) throw new Error('sh did not start');
      const recorded = identifyProcess(pid);
      const [line] = (await once(orphan.stdout, 'data')) as [Buffer];
      const grandchild = Number(line.toString().trim());
      try {
        await leaveStateFile({
          current: {
            taskId: 't9',
            token: 'token-t9',
            attempt: 1,
            state: 'working',
            process: recorded,
          },
        });
        const hub = await startHub();
        const goneAtReport: boolean[] = [];
        hub.on('event', ({ event }) => {
          if (event === 'task:fail')
            goneAtReport.push(isProcessGone(pid), isProcessGone(grandchild));
        });
        const failed = hub.nextEvent('task:fail');
        expect(isProcessGone(grandchild)).toBe(false);
        await start([hub.url]);
        expect((await failed).message).toMatchObject({ taskId: 't9', error: INTERRUPTED_ERROR });
        expect(goneAtReport).toEqual([true, true]);
      } finally {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // gone, as it should be
        }
      }
    });

    it('warns that nothing was signalled for a task left working with no process recorded', async () => {
      // The sidecar was killed between starting the handler and recording its process.
      await leaveStateFile({
        current: { taskId: 't9', token: 'token-t9', attempt: 1, state: 'working' },
      });
      const hub = await startHub();
      const { logger, entries } = recordingLogger();
      const failed = hub.nextEvent('task:fail');
      await start([hub.url], {}, logger);
      expect((await failed).message).toMatchObject({ taskId: 't9', error: INTERRUPTED_ERROR });
      expect(entries()).toContainEqual(
        expect.objectContaining({
          level: 40,
          taskId: 't9',
          msg: expect.stringMatching(/^no handler process is recorded .* none was signalled/),
        }),
      );
    });

    it.each(['777', '770', '703'])(
      'refuses a state dir of mode %s, whose IPC socket another user could replace',
      async (mode) => {
        const hub = await startHub();
        const stateDir = join(dir, 'state');
        await mkdir(stateDir);
        await chmod(stateDir, parseInt(mode, 8));
        const refused = start([hub.url]);
        await expect(refused).rejects.toBeInstanceOf(StateFileError);
        await expect(refused).rejects.toThrow(
          `${stateDir} is writable by group or others (mode ${mode})`,
        );
        expect(existsSync(join(stateDir, 'sidecar.lock'))).toBe(false);
        expect(existsSync(join(stateDir, 'sidecar.sock'))).toBe(false);
      },
    );

    it('starts in a state dir that others may only read, warning about it', async () => {
      const hub = await startHub();
      await mkdir(join(dir, 'state'));
      await chmod(join(dir, 'state'), 0o755);
      const { logger, entries } = recordingLogger();
      await start([hub.url], {}, logger);
      expect(entries().map((entry) => entry.msg)).toContainEqual(
        expect.stringMatching(/^the state dir is open to group or others/),
      );
    });

    it('refuses to share its state dir with a running sidecar, and frees it on stop', async () => {
      const hub = await startHub();
      const first = await start([hub.url]);
      await expect(start([hub.url])).rejects.toBeInstanceOf(StateDirInUseError);
      await first.stop();
      const second = await start([hub.url]);
      expect(second.state().outbox).toEqual([]);
    });
  });

  describe('when the hub refuses or replaces it', () => {
    it.each(['E_UNAUTHORIZED', 'E_PROTOCOL_VERSION'])(
      'ends with exit code 3 on %s, without retrying',
      async (code) => {
        const hub = await startHub();
        hub.refuseWith = code;
        const daemon = await start([hub.url]);
        expect(await daemon.ended).toEqual({
          exitCode: EXIT_CODES.REFUSED,
          reason: `${code}: refused: ${code}`,
        });
        expect(daemon.state().connected).toBe(false);
      },
    );

    it('retries a refusal with a retryable code until the hub takes it', async () => {
      const hub = await startHub();
      hub.refuseWith = 'E_UNAVAILABLE';
      const { logger, entries } = recordingLogger();
      const daemon = await start([hub.url], {}, logger);
      const refusals = (): unknown[] =>
        entries().filter(
          (entry) => entry.code === 'E_UNAVAILABLE' && /refused/.test(String(entry.msg)),
        );
      // two refusals: it retried after the first, and is still retrying
      await waitUntil(() => refusals().length >= 2, 'two refused handshakes');
      expect(daemon.state().connected).toBe(false);
      const taken = next(daemon, 'connected');
      hub.refuseWith = undefined;
      expect(await taken).toEqual({ url: hub.url });
      expect(hub.handshakes).toHaveLength(1);
    });

    it('connects again when the hub closes its socket without a reason', async () => {
      const { hub, daemon, socket } = await connected();
      const disconnected = next(daemon, 'disconnected');
      const again = hub.connection({ fresh: true });
      socket.disconnect(true);
      expect(await disconnected).toEqual({ reason: 'io server disconnect' });
      await again;
      expect(hub.handshakes).toHaveLength(2);
    });

    it('ends with exit code 4 on hub:error E_REPLACED, and stops the task', async () => {
      const { hub, daemon, socket } = await running();
      socket.emit('hub:error', { code: 'E_REPLACED', message: 'replaced' });
      socket.disconnect(true);
      expect(await daemon.ended).toEqual({
        exitCode: EXIT_CODES.REPLACED,
        reason: 'E_REPLACED: replaced',
      });
      expect(hub.handshakes).toHaveLength(1);
      expect(daemon.state().outbox).toMatchObject([
        { type: 'fail', taskId: 't1', retryable: true },
      ]);
    });
  });

  describe('with several hub URLs', () => {
    it('moves on from a hub it cannot reach', async () => {
      const dead = await closedPortUrl();
      const hub = await startHub();
      const daemon = await start([dead, hub.url]);
      expect(await next(daemon, 'connected')).toEqual({ url: hub.url });
    });

    it('moves to the next hub on hub:draining, keeping its task', async () => {
      const first = await startHub();
      const second = await startHub();
      const daemon = await start([first.url, second.url]);
      const { socket } = await first.connection();
      socket.emit('task:assign', assignment('t1'));
      await first.nextEvent('task:log');

      const moved = second.connection({ fresh: true });
      socket.emit('hub:draining', {});
      expect((await moved).auth.current).toEqual({
        taskId: 't1',
        token: 'token-t1',
        state: 'working',
      });
      const completed = second.nextEvent('task:complete');
      await release('t1');
      expect((await completed).message).toMatchObject({ taskId: 't1' });
      expect(daemon.state().connected).toBe(true);
      expect(first.sockets()).toHaveLength(0);
    });
  });

  describe('on shutdown', () => {
    it('sends agent:drain, lets the task finish, delivers its report, then stops', async () => {
      const { hub, daemon, socket } = await running();

      const drain = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await drain;
      socket.emit('task:assign', assignment('t2'));
      await release('t1');
      await stopped;
      expect(hub.messages('task:complete')).toEqual([
        { taskId: 't1', token: 'token-t1', result: { done: 't1', payload: { n: 1 } } },
      ]);
      expect(await runs()).toEqual(['t1']);
      expect(daemon.state()).toMatchObject({ connected: false, current: undefined, outbox: [] });
    });

    it('takes no task pushed while agent:drain waits for its ack', async () => {
      const { hub, daemon, socket } = await connected();
      hub.respond = unanswered('agent:drain');
      await waitUntil(() => daemon.state().connected, 'the daemon connected');
      const drain = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await drain;
      socket.emit('task:assign', assignment('t2'));
      await stopped;
      expect(hub.messages('task:accept')).toEqual([]);
      expect(await runs()).toEqual([]);
    });

    it('asks the hub to drain again when it declines a task pushed during the drain', async () => {
      // the hub gives back a pushed task at the agent's own drain: ignored, it waited out the
      // hub's ack timeout
      const { hub, daemon, socket } = await connected();
      hub.respond = ({ event }) =>
        event === 'agent:drain' && hub.messages('agent:drain').length === 1 ? 'no-ack' : undefined;
      await waitUntil(() => daemon.state().connected, 'the daemon connected');
      const drain = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await drain;
      socket.emit('task:assign', assignment('t2'));
      // before the first one's ack timeout ends the drain
      await waitUntil(() => hub.messages('agent:drain').length === 2, 'agent:drain again', 5000);
      await stopped;
      const drains = hub.received.filter((received) => received.event === 'agent:drain');
      expect(drains.map((received) => received.socket.id)).toEqual([socket.id, socket.id]);
      expect(hub.messages('task:accept')).toEqual([]);
      expect(await runs()).toEqual([]);
    });

    it('drains all the same when the hub refuses agent:drain, logging its code', async () => {
      const { logger, entries } = recordingLogger();
      const { hub, daemon, socket } = await running({}, logger);
      hub.respond = refusing('agent:drain', 'E_UNAVAILABLE', 'Redis is unavailable');
      const refused = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await refused;
      await waitUntil(
        () => entries().some((entry) => entry.code === 'E_UNAVAILABLE'),
        'the refusal logged',
      );
      expect(entries().find((entry) => entry.code === 'E_UNAVAILABLE')).toMatchObject({
        level: 40,
        msg: 'the hub refused agent:drain: draining here all the same',
        reason: 'Redis is unavailable',
      });

      // the hub, which did not record the drain, pushes another task: declined, and asked again
      hub.respond = () => undefined;
      socket.emit('task:assign', assignment('t2'));
      await waitUntil(() => hub.messages('agent:drain').length === 2, 'agent:drain again', 5000);
      await release('t1');
      await stopped;
      expect(hub.messages('task:accept')).toEqual([{ taskId: 't1', token: 'token-t1' }]);
      expect(hub.messages('task:complete')).toMatchObject([{ taskId: 't1' }]);
      expect(await runs()).toEqual(['t1']);
    });

    it('asks a new connection to drain too, while it still finishes its task', async () => {
      // the hub ends an agent's own drain with the connection that asked for it
      const { hub, daemon, socket } = await running();
      const firstDrain = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await firstDrain;

      const reconnected = hub.connection({ fresh: true });
      const again = hub.nextEvent('agent:drain');
      socket.disconnect(true); // a network blip during the drain
      const { socket: fresh } = await reconnected;
      const asked = await again;
      expect(asked.socket.id).toBe(fresh.id);
      await release('t1');
      await stopped;
      expect(hub.messages('task:complete')).toHaveLength(1);
    });

    it('waits for the hub to come back to deliver a report stored while it was away, then stops', async () => {
      const { logger, entries } = recordingLogger();
      const { hub, daemon } = await running({}, logger);
      const drain = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await drain;

      // the hub goes away (restarting, or its replica stopping) and the task ends meanwhile
      await finishWhileHubAway(hub, daemon);
      let over = false;
      void stopped.then(() => (over = true));
      await waitUntil(
        () => over || entries().some((entry) => /waiting for a connection/.test(String(entry.msg))),
        'the drain to wait for a connection, or to end',
      );
      expect(over).toBe(false);

      const back = hub.connection({ fresh: true });
      await hub.start();
      expect((await back).auth.current).toMatchObject({ taskId: 't1', state: 'finished' });
      await stopped;
      expect(hub.messages('task:complete')).toEqual([
        { taskId: 't1', token: 'token-t1', result: { done: 't1', payload: { n: 1 } } },
      ]);
      // the new connection was asked to drain too, before the report
      expect(hub.messages('agent:drain')).toHaveLength(2);
      expect(daemon.state()).toMatchObject({ current: undefined, outbox: [] });
    });

    it('stops with its report kept when no hub comes back: after the grace, and 5 s at least', async () => {
      const { hub, daemon } = await running({ drainGraceMs: 1000 });
      await finishWhileHubAway(hub, daemon);
      const stopping = performance.now();
      await daemon.shutdown();
      expect(performance.now() - stopping).toBeGreaterThanOrEqual(DELIVERY_WAIT_MS - 100);
      expect(performance.now() - stopping).toBeLessThan(DELIVERY_WAIT_MS + 2000);
      expect(daemon.state().outbox).toMatchObject([{ type: 'complete', taskId: 't1' }]);
    });

    it('stops the task when the grace runs out and reports it as a retryable failure', async () => {
      const { hub, daemon } = await running({ drainGraceMs: 200 });
      await daemon.shutdown();
      expect(hub.messages('task:fail')).toEqual([
        {
          taskId: 't1',
          token: 'token-t1',
          error: 'the sidecar shut down before the task finished',
          retryable: true,
          kind: 'error',
        },
      ]);
      expect(existsSync(join(dir, 'state', 'sidecar.lock'))).toBe(false);
    });

    it('takes the report of a wake task during the drain, through its IPC socket', async () => {
      const { hub, daemon, socket } = await connected({
        runner: { kind: 'wake', argv: [process.execPath, '-e', 'console.log("woke")'] },
      });
      await assignT1AndAwait(hub, socket, 'task:log');

      const drain = hub.nextEvent('agent:drain');
      const stopped = daemon.shutdown();
      await drain;
      await expect(
        ipcRequest(daemon.socketPath, { type: 'done', result: { late: true } }, 5000),
      ).resolves.toEqual({ ok: true, taskId: 't1' });
      await stopped;
      expect(hub.messages('task:complete')).toEqual([
        { taskId: 't1', token: 'token-t1', result: { late: true } },
      ]);
      expect(existsSync(daemon.socketPath)).toBe(false);
    });
  });

  describe('in wake mode', () => {
    it('removes a current.json left by a dead sidecar, reporting its task as interrupted', async () => {
      const hub = await startHub();
      await leaveStateFile({
        current: { taskId: 'old', token: 'token-old', attempt: 1, state: 'working' },
      });
      await writeFile(join(dir, 'state', 'current.json'), '{"id":"old"}');
      const failed = hub.nextEvent('task:fail');
      const { logger, entries } = recordingLogger();
      const daemon = await start(
        [hub.url],
        { runner: { kind: 'wake', argv: [process.execPath, '-e', ''] } },
        logger,
      );
      expect(existsSync(join(dir, 'state', 'current.json'))).toBe(false);
      expect((await failed).message).toMatchObject({ taskId: 'old', error: INTERRUPTED_ERROR });
      expect(daemon.status()).toMatchObject({ mode: 'wake', task: null });
      // Wake mode records no process: there is nothing to warn about.
      expect(entries().map((entry) => entry.msg)).not.toContainEqual(
        expect.stringMatching(/^no handler process is recorded/),
      );
    });
  });
});

/** A URL nothing listens on: a port just freed. */
async function closedPortUrl(): Promise<string> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}

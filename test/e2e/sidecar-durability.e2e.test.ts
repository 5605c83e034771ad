import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { isProcessGone } from '../../sidecar/src/test-support/process';
import { api, eventually } from '../helpers/hub';
import { useHubProcesses } from '../helpers/hub-processes-fixture';
import { completionsByTask, readTransitions } from '../helpers/invariants';
import {
  RECORD_HANDLER,
  mintToken,
  runSidecarCli,
  startHubProcess,
  startSidecarProcess,
  type HubProcess,
  type TestProcess,
} from '../helpers/processes';

jest.setTimeout(60_000);

/** Resolves with the first match of `pattern` in the process's output, as soon as it is printed. */
function outputMatch(proc: TestProcess, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const match = pattern.exec(proc.output);
      if (match === null) return false;
      resolve(match);
      return true;
    };
    if (check()) return;
    const onData = (): void => {
      if (check()) off();
    };
    const onExit = (): void => {
      if (!check())
        reject(new Error(`${proc.name} exited before printing ${pattern}:\n${proc.output}`));
      off();
    };
    const off = (): void => {
      proc.child.stdout?.off('data', onData);
      proc.child.stderr?.off('data', onData);
      proc.child.off('exit', onExit);
    };
    // after TestProcess's own listeners: `output` already holds the chunk
    proc.child.stdout?.on('data', onData);
    proc.child.stderr?.on('data', onData);
    proc.child.once('exit', onExit);
  });
}

/**
 * Decodes the websocket frames of one direction of a Socket.IO connection (no compression: the
 * hub uses none), handing each whole frame to `onFrame` with its text payload (unmasked).
 */
class FrameReader {
  private pending = Buffer.alloc(0);
  private upgraded = false;

  constructor(private readonly onFrame: (raw: Buffer, text: string) => void) {}

  /** Takes the next bytes; returns what went before the frames (the HTTP upgrade), to pass on. */
  push(chunk: Buffer): Buffer {
    this.pending = Buffer.concat([this.pending, chunk]);
    let head = Buffer.alloc(0);
    if (!this.upgraded) {
      const end = this.pending.indexOf('\r\n\r\n');
      if (end < 0) return head;
      head = this.pending.subarray(0, end + 4);
      this.pending = this.pending.subarray(end + 4);
      this.upgraded = true;
    }
    for (;;) {
      const frame = this.pending;
      if (frame.length < 2) break;
      const masked = (frame[1]! & 0x80) !== 0;
      let length = frame[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (frame.length < 4) break;
        length = frame.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (frame.length < 10) break;
        length = Number(frame.readBigUInt64BE(2));
        offset = 10;
      }
      const maskAt = offset;
      if (masked) offset += 4;
      if (frame.length < offset + length) break;
      const payload = Buffer.from(frame.subarray(offset, offset + length));
      if (masked) for (let i = 0; i < length; i++) payload[i]! ^= frame[maskAt + (i % 4)]!;
      this.pending = frame.subarray(offset + length);
      this.onFrame(frame.subarray(0, offset + length), payload.toString('utf8'));
    }
    return head;
  }
}

/**
 * A TCP proxy in front of a hub that lets a sidecar's `task:complete` through to the hub and
 * holds the hub's ack of it: `acked` resolves with the report once the hub has answered it, and
 * the sidecar never hears the answer (it can then be killed "between the ack and the removal").
 */
class AckTrap {
  readonly acked: Promise<string>;
  private onAcked: (text: string) => void = () => undefined;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly hubPort: number) {
    this.acked = new Promise((resolve) => (this.onAcked = resolve));
    this.server = createServer((client) => this.pipe(client));
  }

  async listen(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }

  private pipe(client: Socket): void {
    const hub = connect(this.hubPort, '127.0.0.1');
    this.sockets.add(client).add(hub);
    let reportId: string | undefined;
    let report = '';
    let holding = false;
    const fromClient = new FrameReader((_raw, text) => {
      const sent = /^42\/agent,(\d+)\["task:complete"/.exec(text);
      if (sent) [report, reportId] = [text, sent[1]];
    });
    const fromHub = new FrameReader((raw, text) => {
      if (!holding && reportId !== undefined && text.startsWith(`43/agent,${reportId}[`)) {
        holding = true;
        this.onAcked(report);
      }
      if (!holding) client.write(raw);
    });
    client.on('data', (chunk: Buffer) => {
      fromClient.push(chunk);
      hub.write(chunk);
    });
    hub.on('data', (chunk: Buffer) => {
      const head = fromHub.push(chunk);
      if (head.length > 0) client.write(head);
    });
    const end = (): void => {
      client.destroy();
      hub.destroy();
    };
    client.on('close', end).on('error', end);
    hub.on('close', end).on('error', end);
  }
}

describe('sidecar durability across kill -9 (real hub, real sidecar processes)', () => {
  const cluster = useHubProcesses({ per: 'test', dirPrefix: 'agentcom-durability-e2e-' });
  const { hubs, sidecars } = cluster;

  const getTask = async (hub: HubProcess, id: string) =>
    (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
  const waitTaskState = (hub: HubProcess, id: string, state: TaskView['state']) =>
    eventually(
      async () => {
        const task = await getTask(hub, id);
        return task.state === state ? task : undefined;
      },
      { what: `task ${state}`, timeoutMs: 20_000 },
    );
  const waitAgentIdle = (hub: HubProcess, agentId: string) =>
    eventually(
      async () => {
        const agent = await api<{ state: string }>(hub.url, 'GET', `/v1/agents/${agentId}`);
        return agent.body.state === 'idle' ? true : undefined;
      },
      { what: `${agentId} idle` },
    );

  /** Writes an executable `/bin/sh` handler into the test's directory. */
  function shellHandler(name: string, body: string): string {
    const path = join(cluster.dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o700);
    return path;
  }

  function startSidecar(
    hub: HubProcess,
    agentId: string,
    token: string,
    exec: string,
    env: Record<string, string> = {},
  ): TestProcess {
    const proc = startSidecarProcess({
      hubUrls: [hub.url],
      agentId,
      token,
      stateDir: join(cluster.dir, agentId),
      exec,
      env: { AGENTCOM_KILL_GRACE_MS: '500', ...env },
    });
    sidecars.push(proc);
    return proc;
  }

  /**
   * A hub, and a sidecar whose `/bin/sh` handler (`lines`) kills it (kill -9 of its parent) on
   * the first attempt of a new task of 3 attempts: resolves once that sidecar died.
   */
  async function firstAttemptKillsSidecar(agentId: string, handlerName: string, lines: string[]) {
    const hub = await startHubProcess(cluster.redis.url, cluster.prefix, 'hub-1');
    hubs.push(hub);
    const handler = shellHandler(handlerName, lines.join('\n'));
    const token = await mintToken(hub.url, agentId);
    const first = startSidecar(hub, agentId, token, handler);
    await waitAgentIdle(hub, agentId);
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: {},
      attempts: 3,
    });
    expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });
    return { hub, token, handler, taskId: created.body.id };
  }

  it('kill -9 as soon as the handler has its task: the restarted sidecar stops that handler before the task is retried', async () => {
    const pidFile = join(cluster.dir, 'handler.pid');
    // The first attempt kills its sidecar (its parent) the moment it has read its task, and runs
    // on; the retry completes.
    const { hub, token, handler, taskId } = await firstAttemptKillsSidecar(
      'abrupt',
      'kill-parent.sh',
      [
        'read -r task',
        'if [ "$AGENTCOM_ATTEMPT" = 1 ]; then',
        '  kill -9 $PPID',
        `  echo $$ > "${pidFile}"`,
        '  exec sleep 30',
        'fi',
        'echo \'{"retried":true}\'',
      ],
    );
    const orphan = await eventually(
      () => {
        const line = existsSync(pidFile) ? readFileSync(pidFile, 'utf8') : '';
        return /^\d+\n$/.test(line) ? Number(line) : undefined;
      },
      { what: 'the orphaned handler to write its pid', intervalMs: 10 },
    );
    try {
      expect(isProcessGone(orphan)).toBe(false);
      const second = startSidecar(hub, 'abrupt', token, handler);
      await outputMatch(second, /"msg":"sidecar starting"/);
      // the orphan was stopped before the task was reported, hence before it could be retried
      expect(second.output).not.toContain('no handler process is recorded');
      expect(isProcessGone(orphan)).toBe(true);
      const task = await waitTaskState(hub, taskId, 'completed');
      expect(task).toMatchObject({ attempt: 2, result: { retried: true } });
      expect(second.output).toMatch(/"outcome":"terminated"/);
    } finally {
      if (!isProcessGone(orphan)) process.kill(orphan, 'SIGKILL');
    }
  });

  it('kill -9 after the hub applied a report and before the sidecar removed it: the replay is a duplicate, the task completed once', async () => {
    const hub = await startHubProcess(cluster.redis.url, cluster.prefix, 'hub-1');
    hubs.push(hub);
    const trap = new AckTrap(hub.port);
    try {
      const token = await mintToken(hub.url, 'replayer');
      const first = startSidecarProcess({
        hubUrls: [await trap.listen()],
        agentId: 'replayer',
        token,
        stateDir: join(cluster.dir, 'replayer'),
        env: { RUN_LOG: join(cluster.dir, 'run.log') },
      });
      sidecars.push(first);
      await waitAgentIdle(hub, 'replayer');
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: { value: 'once' },
      });
      const id = created.body.id;
      expect(await trap.acked).toContain(id);
      await first.kill('SIGKILL');
      // the hub applied it; the sidecar's state file still holds it
      expect(await getTask(hub, id)).toMatchObject({ state: 'completed', attemptsMade: 1 });
      const state = JSON.parse(
        readFileSync(join(cluster.dir, 'replayer', 'state.json'), 'utf8'),
      ) as { current?: { taskId: string; state: string }; outbox: Array<{ taskId: string }> };
      expect(state.outbox.map((report) => report.taskId)).toEqual([id]);
      expect(state.current).toMatchObject({ taskId: id, state: 'finished' });

      const second = startSidecar(hub, 'replayer', token, `${process.execPath} ${RECORD_HANDLER}`, {
        RUN_LOG: join(cluster.dir, 'run.log'),
      });
      await outputMatch(second, /"duplicate":true,"msg":"report delivered"/);
      await waitAgentIdle(hub, 'replayer');
      expect(await getTask(hub, id)).toMatchObject({
        state: 'completed',
        attemptsMade: 1,
        result: { taskId: id, value: 'once' },
      });
      const completions = completionsByTask(
        await readTransitions(cluster.redis.url, cluster.prefix),
      );
      expect(completions.get(id)).toBe(1);
      const runs = readFileSync(join(cluster.dir, 'run.log'), 'utf8')
        .split('\n')
        .filter((line) => line.startsWith(`${id} `) && line.endsWith(' start'));
      expect(runs).toHaveLength(1);
    } finally {
      trap.close();
    }
  });

  it('kill -9 after the handler printed its result and before it was stored: reported as interrupted, retried, completed once', async () => {
    // The first attempt prints its result, kills its sidecar, and exits 0.
    const { hub, token, handler, taskId } = await firstAttemptKillsSidecar(
      'unlucky',
      'result-then-kill.sh',
      [
        'read -r task',
        'echo "{\\"attempt\\":$AGENTCOM_ATTEMPT}"',
        'if [ "$AGENTCOM_ATTEMPT" = 1 ]; then kill -9 $PPID; fi',
      ],
    );
    const state = JSON.parse(readFileSync(join(cluster.dir, 'unlucky', 'state.json'), 'utf8')) as {
      current?: { taskId: string; state: string };
      outbox: unknown[];
    };
    expect(state).toMatchObject({
      current: { taskId, state: 'working' },
      outbox: [],
    });
    const second = startSidecar(hub, 'unlucky', token, handler);
    const task = await waitTaskState(hub, taskId, 'completed');
    expect(task).toMatchObject({ attempt: 2, attemptsMade: 2, result: { attempt: 2 } });
    expect(second.output).toContain('the previous sidecar process stopped while running this task');
    const completions = completionsByTask(await readTransitions(cluster.redis.url, cluster.prefix));
    expect(completions.get(taskId)).toBe(1);
  });

  it('a second sidecar on the same state dir exits 2 at once; after a kill -9 of the first, the next one takes the dir over', async () => {
    const hub = await startHubProcess(cluster.redis.url, cluster.prefix, 'hub-1');
    hubs.push(hub);
    const token = await mintToken(hub.url, 'shared');
    const exec = `${process.execPath} ${RECORD_HANDLER}`;
    const first = startSidecar(hub, 'shared', token, exec);
    await waitAgentIdle(hub, 'shared');
    const intruder = startSidecar(hub, 'shared', token, exec);
    expect(await intruder.exited).toEqual({ code: 2, signal: null });
    expect(intruder.output).toContain(`the state dir is in use by process ${first.pid}`);
    expect(first.running).toBe(true);
    // the refused one left the running sidecar's IPC socket alone
    const status = await runSidecarCli(['status'], {
      AGENTCOM_STATE_DIR: join(cluster.dir, 'shared'),
    });
    expect(status).toMatchObject({ code: 0, stdout: expect.stringContaining('shared') as unknown });
    await first.kill('SIGKILL');
    const next = startSidecar(hub, 'shared', token, exec);
    await outputMatch(next, /"msg":"sidecar starting"/);
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { value: 'after the takeover' },
    });
    await waitTaskState(hub, created.body.id, 'completed');
    expect(next.running).toBe(true);
  });

  it('SIGTERM while the handler floods stdout and stderr and ignores SIGTERM: stopped after the graces, its failure delivered, exit 0', async () => {
    const hub = await startHubProcess(cluster.redis.url, cluster.prefix, 'hub-1');
    hubs.push(hub);
    const flood = join(cluster.dir, 'flood.js');
    writeFileSync(
      flood,
      [
        "process.on('SIGTERM', () => {});",
        "const line = 'x'.repeat(100_000) + '\\n';",
        "const pump = (stream) => { while (stream.write(line)); stream.once('drain', () => pump(stream)); };",
        "process.stdin.once('data', () => { console.log('flooding'); pump(process.stdout); pump(process.stderr); });",
      ].join('\n'),
    );
    const token = await mintToken(hub.url, 'flooder');
    const proc = startSidecar(hub, 'flooder', token, `${process.execPath} ${flood}`, {
      AGENTCOM_DRAIN_GRACE_MS: '1000',
    });
    await waitAgentIdle(hub, 'flooder');
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: {},
      attempts: 1,
    });
    await outputMatch(proc, /"line":"xxxx/);
    const signalled = Date.now();
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    // drain grace 1 s, kill grace 0.5 s, then the report: well within the deploy files' bounds
    expect(Date.now() - signalled).toBeLessThan(10_000);
    const task = await waitTaskState(hub, created.body.id, 'failed');
    expect(task.error).toContain('the sidecar shut down before the task finished');
    const state = JSON.parse(
      readFileSync(join(cluster.dir, 'flooder', 'state.json'), 'utf8'),
    ) as unknown;
    expect(state).toEqual({ version: 1, outbox: [] });
  });
});

/**
 * The simulated agents: a separate process (forked by a benchmark, commands over IPC, see
 * `lib/load-spec.ts`) holding N real Socket.IO connections to the `/agent` namespace with the
 * real handshake, tokens minted through `POST /v1/agents`. Each agent answers `task:assign` with
 * `task:accept` then (after `holdMs`) `task:complete`, both with acks, and sends
 * `agent:heartbeat` every `heartbeatMs`.
 *
 * Reconnecting mirrors the sidecar's HubConnection: socket.io-client's backoff (200 ms first
 * delay, 10 s max, jitter 0.5), 3 attempts per URL, then the next URL of the agent's own random
 * cycle through them (agents leaving one replica spread over the others); the handshake re-announces
 * the task held (`current`), and an unanswered report is sent again after the reconnect. As in
 * the sidecar, a finished task's report waits in an outbox and the agent takes the next task
 * while the report is being delivered.
 */
import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  type ClientToServerEvents,
  type CurrentAssignment,
  type HandshakeAuth,
  type ServerToClientEvents,
  type TaskAssign,
  type TaskCancel,
} from '@agentcom/shared';
import { Manager, type Socket } from 'socket.io-client';
import { requestJson, mintToken, type TaskView } from './lib/http';
import type {
  InitArgs,
  LoadSpec,
  LoadStats,
  ReconnectReport,
  SteadyArgs,
  SteadyResult,
} from './lib/load-spec';
import { serveRpc } from './lib/rpc';
import { mapLimit, now, sleep, withTimeout } from './lib/util';

const ACK_TIMEOUT_MS = 10_000;
const FAILOVER_ATTEMPTS = 3;
const REFUSED_FOR_GOOD = new Set([
  'E_UNAUTHORIZED',
  'E_FORBIDDEN',
  'E_PROTOCOL_VERSION',
  'E_VALIDATION',
]);

type AgentSocket = Socket<ServerToClientEvents, ClientToServerEvents>;
interface AckEmitter {
  emitWithAck(event: string, message: unknown): Promise<unknown>;
}
interface AckShape {
  ok: boolean;
  code?: string;
  duplicate?: boolean;
  abort?: boolean;
}

// ---- shared state of the process ----

let config: InitArgs | undefined;
const agents: SimAgent[] = [];
const stats: Omit<LoadStats, 'connected' | 'completedUnique' | 'cpuMs'> = freshStats();
const completedIds = new Set<string>();
/** First `task:assign` of each task: performance.now() and epoch ms. */
const assignAt = new Map<string, number>();
const assignEpoch = new Map<string, number>();
/** `task:complete` acknowledged: performance.now(). */
const completeAt = new Map<string, number>();
/** Tasks whose completion was acknowledged as a duplicate (a replayed report). */
const duplicateIds = new Set<string>();
const completionWaiters = new Set<() => void>();
const connectionWaiters = new Set<() => void>();
let connectedCount = 0;

function freshStats(): Omit<LoadStats, 'connected' | 'completedUnique' | 'cpuMs'> {
  return {
    assigned: 0,
    completed: 0,
    duplicates: 0,
    acceptsSuperseded: 0,
    reportsSuperseded: 0,
    cancels: 0,
    cancelReasons: {},
    aborts: 0,
    busyAssigns: 0,
    heartbeatsOk: 0,
    heartbeatsFailed: 0,
    errors: {},
  };
}

function countError(code: string): void {
  stats.errors[code] = (stats.errors[code] ?? 0) + 1;
}

class NotConnectedError extends Error {}

interface Held {
  taskId: string;
  token: string;
  /** assigned: accept not acknowledged; working: accepted, holding; finished: to report. */
  state: 'assigned' | 'working' | 'finished';
  holdDone: boolean;
}

/** One simulated sidecar. */
class SimAgent {
  private socket: AgentSocket | undefined;
  private manager: Manager<ServerToClientEvents, ClientToServerEvents> | undefined;
  private urlIndex: number;
  /** The URL indexes in the order this agent moves through them (a random cycle, as the sidecar's). */
  private readonly cycle: number[];
  private generation = 0;
  private urlsFailed = 0;
  private failedRounds = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private driving = false;
  private delivering = false;
  private wasConnected = false;
  /** The task being carried out, from its assignment until its report is ready. */
  work: Held | undefined;
  /** Reports not yet acknowledged, oldest first (the sidecar's outbox): a new assignment may
   * arrive before the hub's ack of the last report, and is taken, as the sidecar does. */
  readonly outbox: Held[] = [];
  connectedUrl: string | undefined;
  /** Connection history: disconnect and reconnect times (performance.now()). */
  readonly outages: Array<{ downAt: number; upAt?: number }> = [];
  private firstConnect: { resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor(
    readonly agentId: string,
    private readonly token: string,
    private readonly urls: readonly string[],
    startIndex: number,
    private readonly options: InitArgs,
  ) {
    this.urlIndex = startIndex % urls.length;
    this.cycle = Array.from({ length: urls.length }, (_, i) => i);
    for (let i = this.cycle.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [this.cycle[i], this.cycle[j]] = [this.cycle[j] ?? 0, this.cycle[i] ?? 0];
    }
  }

  /** Internal state, for post-mortems. */
  describe(): string {
    const w = this.work;
    return JSON.stringify({
      work: w ? `${w.state}${w.holdDone ? ' held' : ''}` : null,
      outbox: this.outbox.length,
      driving: this.driving,
      delivering: this.delivering,
      connected: this.connected,
      outages: this.outages.length,
    });
  }

  get connected(): boolean {
    return this.socket?.connected === true;
  }

  /** Connects; resolves on the first successful handshake. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject };
      this.open(this.urlIndex);
    });
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeatTimer);
    this.teardown();
  }

  private auth(): HandshakeAuth {
    const held = this.work ?? this.outbox[0];
    const current: CurrentAssignment | undefined = held
      ? { taskId: held.taskId, token: held.token, state: held.state }
      : undefined;
    return {
      agentId: this.agentId,
      token: this.token,
      protocol: PROTOCOL_VERSION,
      queues: this.options.queues,
      sidecarVersion: 'bench',
      ...(current ? { current } : {}),
    };
  }

  private open(index: number): void {
    this.teardown();
    if (this.stopped) return;
    const generation = ++this.generation;
    const isCurrent = (): boolean => generation === this.generation;
    this.urlIndex = index % this.urls.length;
    const url = this.urls[this.urlIndex] ?? '';
    const max = 10_000;
    const manager = new Manager<ServerToClientEvents, ClientToServerEvents>(url, {
      transports: ['websocket'],
      autoConnect: false,
      reconnection: true,
      reconnectionAttempts: this.urls.length > 1 ? FAILOVER_ATTEMPTS : Infinity,
      reconnectionDelay: Math.min(200 * 2 ** this.failedRounds, max),
      reconnectionDelayMax: max,
      randomizationFactor: 0.5,
    });
    const socket: AgentSocket = manager.socket(AGENT_NAMESPACE, {
      auth: (send: (data: object) => void) => send(this.auth()),
    });
    this.manager = manager;
    this.socket = socket;

    manager.on('reconnect_failed', () => {
      if (isCurrent()) this.moveOn(0);
    });
    socket.on('connect', () => {
      if (!isCurrent()) return;
      this.urlsFailed = 0;
      this.failedRounds = 0;
      this.connectedUrl = url;
      this.setConnected(true);
      const outage = this.outages[this.outages.length - 1];
      if (outage && outage.upAt === undefined) outage.upAt = now();
      if (this.firstConnect) {
        this.firstConnect.resolve();
        this.firstConnect = undefined;
        this.startHeartbeats();
      }
      void this.drive();
      void this.deliver();
    });
    socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
      if (!isCurrent()) return;
      if (socket.active) return; // unreachable: socket.io retries with backoff
      const code = err.data?.code ?? 'E_CONNECT';
      if (REFUSED_FOR_GOOD.has(code)) {
        countError(`connect:${code}`);
        this.end(new Error(`${this.agentId} refused: ${code}`));
        return;
      }
      this.moveOn(pause());
    });
    socket.on('disconnect', (reason) => {
      if (!isCurrent()) return;
      this.setConnected(false);
      this.outages.push({ downAt: now() });
      if (reason === 'io server disconnect') this.moveOn(pause());
    });
    socket.on('task:assign', (msg) => this.onAssign(msg));
    socket.on('task:cancel', (msg) => this.onCancel(msg));
    socket.on('hub:draining', () => {
      if (isCurrent()) this.moveOn(this.urls.length > 1 ? 0 : pause());
    });
    socket.on('hub:error', (msg) => {
      if (!isCurrent()) return;
      countError(`hub:${msg.code}`);
      if (msg.code === 'E_REPLACED') this.end(new Error(`${this.agentId} replaced`));
    });
    socket.connect();
  }

  private setConnected(up: boolean): void {
    if (up === this.wasConnected) return;
    this.wasConnected = up;
    connectedCount += up ? 1 : -1;
    if (up) for (const wake of [...connectionWaiters]) wake();
  }

  private moveOn(delayMs: number): void {
    this.urlsFailed++;
    if (this.urlsFailed % this.urls.length === 0) this.failedRounds++;
    const next = this.cycle[(this.cycle.indexOf(this.urlIndex) + 1) % this.cycle.length] ?? 0;
    this.teardown();
    clearTimeout(this.retryTimer);
    if (delayMs <= 0) this.open(next);
    else this.retryTimer = setTimeout(() => this.open(next), delayMs);
  }

  private end(err: Error): void {
    this.close();
    this.setConnected(false);
    if (this.firstConnect) {
      this.firstConnect.reject(err);
      this.firstConnect = undefined;
    }
  }

  private teardown(): void {
    this.generation++;
    const socket = this.socket;
    this.socket = undefined;
    this.manager = undefined;
    if (!socket) return;
    const was = socket.connected;
    socket.disconnect();
    if (was) {
      this.setConnected(false);
      this.outages.push({ downAt: now() });
    }
  }

  private startHeartbeats(): void {
    const period = this.options.heartbeatMs;
    if (period <= 0) return;
    // spread the agents evenly over the period, then beat at the period
    setTimeout(() => {
      if (this.stopped) return;
      void this.beat();
      this.heartbeatTimer = setInterval(() => void this.beat(), period);
    }, Math.random() * period).unref();
  }

  private async beat(): Promise<void> {
    if (!this.connected) return;
    const held = this.work;
    const msg = held?.state === 'working' ? { taskId: held.taskId, token: held.token } : {};
    try {
      const ack = await this.request('agent:heartbeat', msg);
      if (ack.ok) {
        stats.heartbeatsOk++;
        if (ack.abort) stats.aborts++;
        if (ack.abort && held && this.work === held) this.work = undefined;
      } else {
        stats.heartbeatsFailed++;
        countError(`heartbeat:${ack.code ?? '?'}`);
      }
    } catch {
      stats.heartbeatsFailed++;
    }
  }

  private async request(event: string, message: unknown): Promise<AckShape> {
    const socket = this.socket;
    if (!socket?.connected) throw new NotConnectedError(event);
    const emitter = socket.timeout(ACK_TIMEOUT_MS) as unknown as AckEmitter;
    const ack = (await emitter.emitWithAck(event, message)) as AckShape;
    if (typeof ack?.ok !== 'boolean') throw new Error(`malformed ack to ${event}`);
    return ack;
  }

  private onAssign(msg: TaskAssign): void {
    stats.assigned++;
    const taskId = msg.task.id;
    if (!assignAt.has(taskId)) {
      assignAt.set(taskId, now());
      assignEpoch.set(taskId, Date.now());
    }
    if (this.work && this.work.taskId !== taskId) {
      // the hub pushed a task to an agent still carrying one out (guarantee 3)
      stats.busyAssigns++;
      return;
    }
    this.work = { taskId, token: msg.token, state: 'assigned', holdDone: false };
    void this.drive();
  }

  private onCancel(msg: TaskCancel): void {
    stats.cancels++;
    stats.cancelReasons[msg.reason] = (stats.cancelReasons[msg.reason] ?? 0) + 1;
    if (this.work?.taskId === msg.taskId) this.work = undefined;
  }

  /** The task is done: its report goes to the outbox, the agent is free for the next one. */
  private finish(held: Held): void {
    held.state = 'finished';
    if (this.work === held) this.work = undefined;
    this.outbox.push(held);
    void this.deliver();
  }

  /** Accepts the task, then "works" `holdMs`; while connected; idempotent. */
  private async drive(): Promise<void> {
    if (this.driving) return;
    this.driving = true;
    try {
      while (this.work && this.connected) {
        const held = this.work;
        if (held.state === 'working') {
          if (!held.holdDone) await sleep(this.options.holdMs);
          held.holdDone = true;
          if (this.work === held) this.finish(held);
          continue;
        }
        let ack: AckShape;
        try {
          ack = await this.request('task:accept', { taskId: held.taskId, token: held.token });
        } catch (err) {
          // Not connected, or the connection dropped before the ack: the reconnect's handshake
          // re-announces the task and this loop runs again on `connect`. An ack timeout on a
          // live connection: send again.
          if (!(err instanceof NotConnectedError)) countError(`no-ack: ${errorText(err)}`);
          if (!this.connected) break;
          await sleep(100);
          continue;
        }
        if (this.work !== held) continue;
        if (ack.ok) {
          held.state = 'working';
          held.holdDone = this.options.holdMs <= 0;
        } else {
          if (ack.code === 'E_ASSIGNMENT_SUPERSEDED') stats.acceptsSuperseded++;
          else countError(`accept:${ack.code ?? '?'}`);
          this.work = undefined;
        }
      }
    } finally {
      this.driving = false;
    }
  }

  /** Sends the outbox's reports (`task:complete`) in order until acknowledged; idempotent. */
  private async deliver(): Promise<void> {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.outbox.length > 0 && this.connected) {
        const report = this.outbox[0];
        if (!report) break;
        let ack: AckShape;
        try {
          ack = await this.request('task:complete', {
            taskId: report.taskId,
            token: report.token,
          });
        } catch (err) {
          if (!(err instanceof NotConnectedError)) countError(`no-ack: ${errorText(err)}`);
          if (!this.connected) break;
          await sleep(100);
          continue;
        }
        this.outbox.shift();
        if (ack.ok) onCompleted(report.taskId, ack.duplicate === true);
        else if (ack.code === 'E_ASSIGNMENT_SUPERSEDED') stats.reportsSuperseded++;
        else countError(`complete:${ack.code ?? '?'}`);
      }
    } finally {
      this.delivering = false;
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function pause(): number {
  return Math.round(2000 * (0.5 + Math.random()));
}

function onCompleted(taskId: string, duplicate: boolean): void {
  stats.completed++;
  if (duplicate) {
    stats.duplicates++;
    duplicateIds.add(taskId);
  }
  completedIds.add(taskId);
  if (!completeAt.has(taskId)) completeAt.set(taskId, now());
  for (const wake of [...completionWaiters]) wake();
  steadyOnComplete?.(taskId);
}

// ---- commands ----

async function init(args: InitArgs): Promise<LoadSpec['init'][1]> {
  config = args;
  const ids = Array.from({ length: args.count }, (_, i) => `${args.idPrefix}-${i}`);
  const mintStart = now();
  const tokens = await mapLimit(ids, args.mintConcurrency ?? 32, (id, i) =>
    mintToken(args.urls[i % args.urls.length] ?? '', id),
  );
  const mintMs = now() - mintStart;
  const connectStart = now();
  let failed = 0;
  const created = ids.map(
    (id, i) => new SimAgent(id, tokens[i] ?? '', args.urls, i % args.urls.length, args),
  );
  agents.push(...created);
  await mapLimit(created, args.connectConcurrency ?? 100, async (agent) => {
    try {
      await withTimeout(agent.start(), 60_000, `${agent.agentId} to connect`);
    } catch {
      failed++;
    }
  });
  return {
    connected: connectedCount,
    failed,
    mintMs: Math.round(mintMs),
    connectMs: Math.round(now() - connectStart),
    perUrl: perUrl(args.urls),
  };
}

function perUrl(urls: readonly string[]): number[] {
  return urls.map((url) => agents.filter((a) => a.connected && a.connectedUrl === url).length);
}

function currentStats(): LoadStats {
  const usage = process.cpuUsage();
  return {
    ...stats,
    errors: { ...stats.errors },
    cancelReasons: { ...stats.cancelReasons },
    connected: connectedCount,
    completedUnique: completedIds.size,
    cpuMs: Math.round((usage.user + usage.system) / 1000),
  };
}

function waitUntil(
  waiters: Set<() => void>,
  test: () => boolean,
  timeoutMs: number,
): Promise<boolean> {
  if (test()) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiters.delete(check);
      resolve(test());
    }, timeoutMs);
    const check = (): void => {
      if (!test()) return;
      clearTimeout(timer);
      waiters.delete(check);
      resolve(true);
    };
    waiters.add(check);
  });
}

// ---- steady submissions (latency benchmark): all timings on this process' clock ----

interface SteadyRecord {
  sentAt: number;
  acceptedAt?: number;
  visibleAt?: number;
  measured: boolean;
  /** Polled through the API until it shows completed (a sample, see VISIBLE_SAMPLE). */
  watchVisible: boolean;
}
/**
 * One measured task in this many is polled with `GET /v1/tasks/:id` until it shows completed.
 * Polling every task (up to 5 GETs per task, 1 ms apart) more than doubled the load on the
 * polled replica at 200 tasks/s and tripled the p99 of the assignment latency measured at the
 * same time (21 ms, 7 ms without it).
 */
const VISIBLE_SAMPLE = 10;
let steadyOnComplete: ((taskId: string) => void) | undefined;

async function steady(args: SteadyArgs): Promise<SteadyResult> {
  const records = new Map<string, SteadyRecord>();
  const checks: Array<Promise<void>> = [];
  let failedPosts = 0;
  let submitted = 0;

  const checkVisible = async (taskId: string, record: SteadyRecord): Promise<void> => {
    const deadline = now() + 10_000;
    const url = args.urls[0] ?? '';
    let i = 0;
    while (now() < deadline) {
      const res = await requestJson<TaskView>('GET', `${url}/v1/tasks/${taskId}`).catch(
        () => undefined,
      );
      if (res?.status === 200 && res.body.state === 'completed') {
        record.visibleAt = now();
        return;
      }
      await sleep(i++ < 5 ? 1 : 10);
    }
  };
  steadyOnComplete = (taskId) => {
    const record = records.get(taskId);
    if (record?.acceptedAt !== undefined && record.watchVisible) {
      checks.push(checkVisible(taskId, record));
    }
  };

  const submit = async (index: number, measured: boolean): Promise<void> => {
    const url = args.urls[index % args.urls.length] ?? '';
    const sentAt = now();
    try {
      const res = await requestJson<{ id: string }>('POST', `${url}/v1/tasks`, {
        payload: { i: index },
      });
      const acceptedAt = now();
      if (res.status !== 201) {
        failedPosts++;
        return;
      }
      const watchVisible = measured && args.watchVisible !== false && index % VISIBLE_SAMPLE === 0;
      const record: SteadyRecord = { sentAt, acceptedAt, measured, watchVisible };
      records.set(res.body.id, record);
      // completed before the 201 arrived: check now
      if (watchVisible && completeAt.has(res.body.id)) {
        checks.push(checkVisible(res.body.id, record));
      }
    } catch {
      failedPosts++;
    }
  };

  const posts: Array<Promise<void>> = [];
  const run = async (durationMs: number, measured: boolean): Promise<number> => {
    const start = now();
    let sent = 0;
    while (now() - start < durationMs) {
      const due = Math.floor(((now() - start) * args.rate) / 1000);
      while (sent < due) {
        posts.push(submit(submitted++, measured));
        sent++;
      }
      await sleep(1);
    }
    return (sent * 1000) / (now() - start);
  };
  await run(args.warmupMs, false);
  const achievedRate = await run(args.durationMs, true);
  await Promise.all(posts);

  const measured = [...records.entries()].filter(([, r]) => r.measured);
  // wait (bounded) for every measured task to be completed and checked: a hub that cannot keep
  // up with the rate drains its backlog meanwhile (25 ms a task allowed)
  const deadline = now() + Math.max(30_000, submitted * 25);
  while (now() < deadline && measured.some(([id]) => !completeAt.has(id))) await sleep(20);
  await Promise.all(checks);
  steadyOnComplete = undefined;

  const sentToAssign: number[] = [];
  const acceptedToAssign: number[] = [];
  const acceptedToVisible: number[] = [];
  let assignBeforeAccepted = 0;
  let missing = 0;
  for (const [id, record] of measured) {
    const assigned = assignAt.get(id);
    if (assigned === undefined || record.acceptedAt === undefined) {
      missing++;
      continue;
    }
    sentToAssign.push(assigned - record.sentAt);
    if (assigned < record.acceptedAt) assignBeforeAccepted++;
    acceptedToAssign.push(Math.max(0, assigned - record.acceptedAt));
    if (!record.watchVisible) continue;
    if (record.visibleAt !== undefined)
      acceptedToVisible.push(record.visibleAt - record.acceptedAt);
    else missing++;
  }
  return {
    submitted,
    accepted: records.size,
    failedPosts,
    sentToAssign,
    acceptedToAssign,
    assignBeforeAccepted,
    acceptedToVisible,
    missing,
    achievedRate: Math.round(achievedRate * 10) / 10,
  };
}

function reconnects(sinceMs: number | undefined): ReconnectReport {
  const since = sinceMs ?? 0;
  const downtimes: number[] = [];
  let affected = 0;
  let notReconnected = 0;
  let firstDown = Infinity;
  let lastUp = -Infinity;
  for (const agent of agents) {
    const outages = agent.outages.filter((o) => o.downAt >= since);
    const first = outages[0];
    if (!first) continue;
    affected++;
    firstDown = Math.min(firstDown, first.downAt);
    const last = outages[outages.length - 1];
    if (last?.upAt === undefined) {
      notReconnected++;
      continue;
    }
    // from the first loss of the connection to being connected again for good
    downtimes.push(last.upAt - first.downAt);
    lastUp = Math.max(lastUp, last.upAt);
  }
  return {
    connected: connectedCount,
    total: agents.length,
    affected,
    downtimes,
    notReconnected,
    allBackMs: affected > 0 && notReconnected === 0 ? Math.round(lastUp - firstDown) : 0,
    perUrl: perUrl(config?.urls ?? []),
  };
}

serveRpc<LoadSpec>({
  init,
  stats: async () => currentStats(),
  resetStats: async () => {
    Object.assign(stats, freshStats());
    completedIds.clear();
    return {};
  },
  waitCompleted: async ({ n, timeoutMs }) => {
    const reached = await waitUntil(completionWaiters, () => completedIds.size >= n, timeoutMs);
    return { completed: completedIds.size, reached };
  },
  waitConnected: async ({ n, timeoutMs }) => {
    const reached = await waitUntil(connectionWaiters, () => connectedCount >= n, timeoutMs);
    return { connected: connectedCount, reached };
  },
  completedIds: async () => [...completedIds],
  clock: async () => now(),
  steady,
  reconnects: async ({ sinceMs }) => reconnects(sinceMs),
  taskInfo: async ({ taskIds }) =>
    Object.fromEntries(
      taskIds.map((id) => {
        const assignedAt = assignEpoch.get(id);
        return [
          id,
          {
            ...(assignedAt === undefined ? {} : { assignedAt }),
            completed: completedIds.has(id),
            duplicate: duplicateIds.has(id),
            heldBy: agents
              .filter((a) => a.work?.taskId === id || a.outbox.some((r) => r.taskId === id))
              .map((a) => `${a.agentId} ${a.describe()}`),
          },
        ];
      }),
    ),
  close: async () => {
    for (const agent of agents) agent.close();
    return {};
  },
});

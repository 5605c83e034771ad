import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskView } from '@agentcom/shared';
import { api, eventually } from '../helpers/hub';
import {
  completionsByTask,
  doubleHoldings,
  readTransitions,
  type TransitionEvent,
} from '../helpers/invariants';
import {
  allStarted,
  mintToken,
  startHubProcess,
  startSidecarProcess,
  type HubProcess,
  type TestProcess,
} from '../helpers/processes';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** FULL=1 runs the full sizes; the default is what CI can afford. */
export const FULL = process.env.FULL === '1';
export const size = <T>(ci: T, full: T): T => (FULL ? full : ci);

export interface Accepted {
  id: string;
  value: number;
  acceptedAt: number;
}

/** What {@link FaultCluster.checkInvariants} found: each list names what broke a guarantee. */
export interface Invariants {
  tasks: TaskView[];
  /** Accepted tasks that never reached completed, failed or cancelled: lost. */
  notTerminal: string[];
  notCompleted: TaskView[];
  /** Tasks completed more than once (completion events). */
  duplicates: string[];
  /** Tasks held by two agents at once. */
  doubleHoldings: string[];
  /** Completed tasks whose result is not the one their handler computes. */
  wrongResults: string[];
}

/**
 * Asserts the exactly-once guarantees in one expectation (a failure shows every list): nothing
 * lost, completed twice, held twice or completed with a wrong result and, unless `allCompleted`
 * is false, every task completed. Tasks in `except` (put at risk on purpose) may be lost or
 * unfinished; they still may not be duplicated.
 */
export function expectExactlyOnce(
  result: Invariants,
  {
    allCompleted = true,
    except = new Set<string>(),
  }: { allCompleted?: boolean; except?: ReadonlySet<string> } = {},
): void {
  const kept = (id: string): boolean => !except.has(id);
  expect({
    notTerminal: result.notTerminal.filter(kept),
    notCompleted: allCompleted ? result.notCompleted.filter((t) => kept(t.id)) : [],
    duplicates: result.duplicates,
    doubleHoldings: result.doubleHoldings,
    wrongResults: result.wrongResults,
  }).toEqual({
    notTerminal: [],
    notCompleted: [],
    duplicates: [],
    doubleHoldings: [],
    wrongResults: [],
  });
}

/**
 * A private cluster for one fault scenario: its own redis-server, hub processes and sidecar
 * processes (each sidecar knows every hub URL, starting at a different one), plus the bookkeeping
 * every scenario ends with: the accepted tasks and the invariant check.
 */
export class FaultCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'agentcom-fault-'));
  readonly prefix = `f${randomBytes(3).toString('hex')}`;
  readonly hubs: HubProcess[] = [];
  readonly sidecars: TestProcess[] = [];
  readonly accepted: Accepted[] = [];
  redis!: RedisProcess;
  private tokens = new Map<string, string>();
  private submitted = 0;

  constructor(private readonly hubEnv: Record<string, string> = {}) {}

  get runLog(): string {
    return join(this.dir, 'run.log');
  }

  async start(options: {
    hubs: number;
    sidecars: number;
    appendonly?: boolean;
    sidecarEnv?: Record<string, string>;
  }): Promise<void> {
    this.redis = await startRedis({ appendonly: options.appendonly ?? false });
    // side by side; each one started is in `hubs` (for `stop`) already
    await allStarted(Array.from({ length: options.hubs }, (_, i) => this.startHub(i + 1)));
    for (let i = 0; i < options.sidecars; i++)
      await this.startSidecar(`agent-${i}`, i, options.sidecarEnv);
    await this.waitIdle(options.sidecars);
  }

  async startHub(i: number, port?: number): Promise<HubProcess> {
    const hub = await startHubProcess(
      this.redis.url,
      this.prefix,
      `hub-${i}`,
      { EVENTS_MAX_LEN: '1000000', ...this.hubEnv },
      port,
    );
    this.hubs[i - 1] = hub;
    return hub;
  }

  hubUrls(start = 0): string[] {
    const urls = this.hubs.map((h) => h.url);
    return [...urls.slice(start % urls.length), ...urls.slice(0, start % urls.length)];
  }

  async startSidecar(
    agentId: string,
    start = 0,
    env: Record<string, string> = {},
  ): Promise<TestProcess> {
    let token = this.tokens.get(agentId);
    if (!token) {
      token = await mintToken(this.liveHub().url, agentId);
      this.tokens.set(agentId, token);
    }
    const sidecar = startSidecarProcess({
      hubUrls: this.hubUrls(start),
      agentId,
      token,
      stateDir: join(this.dir, agentId),
      env: { RUN_LOG: this.runLog, AGENTCOM_FAILOVER_ATTEMPTS: '1', ...env },
    });
    this.sidecars.push(sidecar);
    return sidecar;
  }

  liveHub(): HubProcess {
    const hub = this.hubs.find((h) => h.running);
    if (!hub) throw new Error('no hub replica is running');
    return hub;
  }

  async waitIdle(count: number, timeoutMs = 30_000): Promise<void> {
    await eventually(
      async () => {
        const listed = await api<{ agents: Array<{ state: string }> }>(
          this.liveHub().url,
          'GET',
          '/v1/agents',
        );
        return listed.body.agents.filter((a) => a.state === 'idle').length >= count
          ? true
          : undefined;
      },
      { what: `${count} idle agents`, timeoutMs },
    );
  }

  /** Submits one task to a live replica (round robin); records it only when the API answered 201. */
  async submit(payload: Record<string, unknown> = {}): Promise<Accepted | undefined> {
    const live = this.hubs.filter((h) => h.running);
    const hub = live[this.submitted++ % live.length];
    if (!hub) return undefined;
    const value = this.submitted;
    const response = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      payload: { value, ...payload },
    }).catch(() => undefined);
    if (response?.status !== 201) return undefined;
    const accepted = { id: response.body.id, value, acceptedAt: Date.now() };
    this.accepted.push(accepted);
    return accepted;
  }

  /** Submits `count` tasks at about `perSecond`, concurrently with whatever the scenario does. */
  async submitAtRate(
    count: number,
    perSecond: number,
    payload: Record<string, unknown> = {},
  ): Promise<void> {
    const started = Date.now();
    for (let n = 0; n < count; n++) {
      const due = started + (n * 1000) / perSecond;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait)); // pacing the load
      await this.submit(payload);
    }
  }

  async task(id: string): Promise<TaskView> {
    return (await api<TaskView>(this.liveHub().url, 'GET', `/v1/tasks/${id}`)).body;
  }

  async events(): Promise<TransitionEvent[]> {
    return readTransitions(this.redis.url, this.prefix);
  }

  /**
   * The invariants every scenario ends with. Waits (bounded) until every accepted task is
   * terminal, then returns what a report needs; the caller asserts.
   */
  async checkInvariants(timeoutMs = 120_000): Promise<Invariants> {
    const ids = this.accepted.map((a) => a.id);
    let tasks: TaskView[] = [];
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      tasks = [];
      for (let i = 0; i < ids.length; i += 50) {
        tasks.push(
          ...(
            await Promise.all(
              ids.slice(i, i + 50).map((id) => this.task(id).catch(() => undefined)),
            )
          ).filter((t): t is TaskView => t !== undefined),
        );
      }
      if (
        tasks.length === ids.length &&
        tasks.every((t) => ['completed', 'failed', 'cancelled'].includes(t.state))
      )
        break;
      await new Promise((resolve) => setTimeout(resolve, 500)); // polling the API until terminal
    }
    const byId = new Map(tasks.map((t) => [t.id, t]));
    const notTerminal = ids.filter(
      (id) => !['completed', 'failed', 'cancelled'].includes(byId.get(id)?.state ?? ''),
    );
    const events = await this.events();
    if (notTerminal.length > 0) {
      // what a failure report needs: where each lost task stands and what its agents did
      console.warn(
        'tasks not terminal:',
        JSON.stringify(
          notTerminal.map((id) => ({
            view: byId.get(id),
            events: events.filter((e) => e.task === id),
          })),
          null,
          1,
        ),
      );
    }
    const completions = completionsByTask(events);
    const duplicates = ids.filter((id) => (completions.get(id) ?? 0) > 1);
    const wrongResults = this.accepted
      .filter((a) => byId.get(a.id)?.state === 'completed')
      .filter((a) => {
        const result = byId.get(a.id)?.result as { taskId?: string; value?: number } | undefined;
        return result?.taskId !== a.id || result.value !== a.value;
      })
      .map((a) => a.id);
    return {
      tasks,
      notTerminal,
      notCompleted: tasks.filter((t) => t.state !== 'completed'),
      duplicates,
      doubleHoldings: doubleHoldings(events),
      wrongResults,
    };
  }

  /** Handler runs recorded as started, per task id. */
  starts(): Map<string, number> {
    const counts = new Map<string, number>();
    let text: string;
    try {
      text = readFileSync(this.runLog, 'utf8');
    } catch {
      return counts;
    }
    for (const line of text.split('\n')) {
      const [taskId, , , , what] = line.split(' ');
      if (taskId && what === 'start') counts.set(taskId, (counts.get(taskId) ?? 0) + 1);
    }
    return counts;
  }

  async stop(): Promise<void> {
    await Promise.all(this.sidecars.map((s) => s.kill('SIGKILL')));
    await Promise.all(this.hubs.map((h) => h.kill('SIGKILL')));
    await this.redis?.dispose();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

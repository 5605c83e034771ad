import type { Logger } from '../logger';
import type { QueueRegistry } from '../queues/queue-registry';

/** A task held by an agent connected to this replica. */
export interface HeldTask {
  taskId: string;
  queue: string;
  token: string;
}

export interface LeaseKeeperOptions {
  queues: QueueRegistry;
  leaseMs: number;
  heartbeatMs: number;
  logger: Logger;
  now?: () => number;
  /** Called for each task whose lock could not be extended (the assignment was lost). */
  onLeaseLost: (agentId: string, task: HeldTask) => void;
}

/**
 * Keeps the leases of the tasks held by agents connected to this replica: every heartbeat period
 * it extends all of them per queue in one `extendJobLocks` call. An agent that stopped
 * heartbeating (3 periods) is not extended, so its lease runs out like a disconnected one's.
 */
export class LeaseKeeper {
  private readonly held = new Map<string, HeldTask & { lastBeatAt: number }>();
  /**
   * Assignments (by token) whose report is being applied: a heartbeat racing the report must not
   * track them again, or the next tick would take the vanished lock for a lost lease.
   */
  private readonly finishing = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly now: () => number;

  constructor(private readonly options: LeaseKeeperOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.timer = setInterval(() => {
      if (!this.running) {
        this.running = this.tick()
          .catch((err: unknown) =>
            this.options.logger.warn({ err: String(err) }, 'lease tick failed'),
          )
          .finally(() => {
            this.running = undefined;
          });
      }
    }, this.options.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  track(agentId: string, task: HeldTask): void {
    if (this.finishing.has(task.token)) return;
    this.held.set(agentId, { ...task, lastBeatAt: this.now() });
  }

  /** Stops extending the agent's lease; with `token`, that assignment is never tracked again. */
  untrack(agentId: string, token?: string): void {
    if (token !== undefined) this.finishing.set(token, this.now());
    const current = this.held.get(agentId);
    if (current && (token === undefined || current.token === token)) this.held.delete(agentId);
  }

  heldBy(agentId: string): HeldTask | undefined {
    return this.held.get(agentId);
  }

  /** Records a heartbeat of a connected agent (its time in Redis is written by the check). */
  beat(agentId: string): void {
    const held = this.held.get(agentId);
    if (held) held.lastBeatAt = this.now();
  }

  size(): number {
    return this.held.size;
  }

  /** One round: extend every live lease, report the lost ones. */
  async tick(): Promise<void> {
    const now = this.now();
    for (const [token, at] of this.finishing) {
      if (now - at > 2 * this.options.leaseMs) this.finishing.delete(token);
    }
    const byQueue = new Map<string, Array<[string, HeldTask]>>();
    for (const [agentId, task] of this.held) {
      if (now - task.lastBeatAt > 3 * this.options.heartbeatMs) continue;
      const list = byQueue.get(task.queue) ?? [];
      list.push([agentId, task]);
      byQueue.set(task.queue, list);
    }
    for (const [queue, entries] of byQueue) {
      const handle = await this.options.queues.get(queue);
      const failed = new Set(
        await handle.worker.extendJobLocks(
          entries.map(([, t]) => t.taskId),
          entries.map(([, t]) => t.token),
          this.options.leaseMs,
        ),
      );
      for (const [agentId, task] of entries) {
        if (!failed.has(task.taskId)) continue;
        const current = this.held.get(agentId);
        if (current?.token !== task.token) continue; // finished meanwhile
        this.held.delete(agentId);
        this.options.onLeaseLost(agentId, task);
      }
    }
  }
}

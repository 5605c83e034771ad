import type { AgentPresence } from '../fsm/agent-store';

export interface Heartbeat {
  agentId: string;
  /** The connection the heartbeat came on. */
  socketId: string;
}

type CheckMany = (beats: readonly Heartbeat[]) => Promise<Array<AgentPresence | undefined>>;

/**
 * Coalesces the heartbeats a replica receives within a few milliseconds into one Redis call
 * (`AgentStore.heartbeats`). With thousands of agents per replica a heartbeat arrives every
 * millisecond or two; checked one by one, each cost a command, a write(2) to Redis and a reply
 * to parse, and that was most of a replica's CPU at idle. A heartbeat's answer waits at most
 * `windowMs` more.
 */
export class HeartbeatBatch {
  private pending: Array<{
    beat: Heartbeat;
    resolve: (presence: AgentPresence | undefined) => void;
    reject: (err: unknown) => void;
  }> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly checkMany: CheckMany,
    private readonly windowMs = 5,
    private readonly maxBatch = 500,
  ) {}

  /** The agent's presence as the record has it, once the batch this heartbeat joined ran. */
  check(beat: Heartbeat): Promise<AgentPresence | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.push({ beat, resolve, reject });
      if (this.pending.length >= this.maxBatch) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.windowMs);
    });
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    this.checkMany(batch.map((entry) => entry.beat)).then(
      (presences) => batch.forEach((entry, i) => entry.resolve(presences[i])),
      (err: unknown) => batch.forEach((entry) => entry.reject(err)),
    );
  }
}

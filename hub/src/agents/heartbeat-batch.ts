import type { AgentPresence } from '../fsm/agent-store';

export interface Heartbeat {
  agentId: string;
  /** The connection the heartbeat came on. */
  socketId: string;
  /** The hash of the token that connection authenticated with. */
  tokenHash: string;
}

type CheckMany = (beats: readonly Heartbeat[]) => Promise<Array<AgentPresence | undefined>>;

/**
 * Coalesces the heartbeats a replica receives within a few milliseconds into one Redis call
 * (`AgentStore.heartbeats`). With thousands of agents per replica a heartbeat arrives every
 * millisecond or two; checked one by one, each cost a command, a write(2) to Redis and a reply
 * to parse, and that was most of a replica's CPU at idle. A heartbeat's answer waits at most
 * `windowMs` more.
 *
 * A heartbeat of a connection whose previous one is still unanswered shares that check's answer
 * (read after both were sent) instead of adding another: while Redis is away, a sidecar whose ack
 * timed out heartbeats again, and each one queued a command in ioredis' offline queue for as
 * long as the outage lasted. At most one check per connection is now pending.
 */
export class HeartbeatBatch {
  private pending: Array<{
    beat: Heartbeat;
    resolve: (presence: AgentPresence | undefined) => void;
    reject: (err: unknown) => void;
  }> = [];
  private timer: NodeJS.Timeout | undefined;
  /** The unanswered check of each connection (by socket id). */
  private readonly unanswered = new Map<string, Promise<AgentPresence | undefined>>();

  constructor(
    private readonly checkMany: CheckMany,
    private readonly windowMs = 5,
    private readonly maxBatch = 500,
  ) {}

  /** The agent's presence as the record has it, once the batch this heartbeat joined ran. */
  check(beat: Heartbeat): Promise<AgentPresence | undefined> {
    const key = `${beat.agentId}\n${beat.socketId}`;
    const unanswered = this.unanswered.get(key);
    if (unanswered) return unanswered;
    const checked = new Promise<AgentPresence | undefined>((resolve, reject) => {
      this.pending.push({ beat, resolve, reject });
      if (this.pending.length >= this.maxBatch) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.windowMs);
    });
    this.unanswered.set(key, checked);
    const settled = (): void => {
      if (this.unanswered.get(key) === checked) this.unanswered.delete(key);
    };
    checked.then(settled, settled);
    return checked;
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

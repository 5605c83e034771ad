import type { Redis } from 'ioredis';

/**
 * Undefined when Redis answers, else what is wrong ({@link RedisProbe.problem}): synchronous
 * while it knows, a promise when it has to ask Redis.
 */
export type RedisProblemCheck = () => string | undefined | Promise<string | undefined>;

export interface RedisProbeOptions {
  /** How long an answer stands for Redis answering: one PING per interval at most. */
  intervalMs?: number;
  /** How long a PING may go unanswered before Redis is taken for not answering. */
  timeoutMs?: number;
  now?: () => number;
}

/**
 * Whether Redis answers, for `/readyz` and the API's Redis gate. A connection's status alone
 * misses a Redis that stopped answering with its TCP connections open (SIGSTOP, a host frozen
 * or partitioned without a reset): ioredis still says `ready`, every request waits, and a load
 * balancer kept sending traffic to the replica. The probe sends a PING (never while the
 * connection is not ready: it would wait in the offline queue) and takes Redis for not answering
 * once it has gone unanswered for `timeoutMs`. An answer stands for `intervalMs`, so frequent
 * health checks and requests cost one PING per interval; at most one PING is pending (a frozen
 * Redis is not sent one per check; a PING pending when the connection drops is forgotten).
 */
export class RedisProbe {
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private answeredAt = Number.NEGATIVE_INFINITY;
  private pending: { since: number; answered: Promise<string | undefined> } | undefined;

  constructor(
    private readonly redis: Redis,
    options: RedisProbeOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.now = options.now ?? Date.now;
    // A PING sent before the connection dropped is resent by ioredis after the reconnect, behind
    // whatever else waits: timed from before the drop, it read as "unanswered for seconds" the
    // moment the connection was ready again, and the API answered 503 until the replay reached
    // it. A new connection gets a PING of its own.
    redis.on('close', () => {
      this.pending = undefined;
    });
  }

  /**
   * Undefined when Redis answers, else what is wrong. Synchronous while the last answer stands or
   * a PING has been pending too long; otherwise waits for a PING, `timeoutMs` at most.
   */
  problem(): string | undefined | Promise<string | undefined> {
    const { status } = this.redis;
    if (status !== 'ready') return `redis ${status}`;
    const now = this.now();
    if (now - this.answeredAt < this.intervalMs) return undefined;
    this.pending ??= this.ping(now);
    const waited = now - this.pending.since;
    if (waited >= this.timeoutMs) return this.notAnswering(waited);
    const { since, answered } = this.pending;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<string>((resolve) => {
      timer = setTimeout(
        () => resolve(this.notAnswering(this.now() - since)),
        this.timeoutMs - waited,
      );
    });
    return Promise.race([answered, timedOut]).finally(() => clearTimeout(timer));
  }

  private notAnswering(waitedMs: number): string {
    return `redis not answering (PING unanswered for ${waitedMs} ms)`;
  }

  private ping(since: number): { since: number; answered: Promise<string | undefined> } {
    const answered = this.redis.ping().then(
      () => {
        this.answeredAt = this.now();
        return undefined;
      },
      (err: unknown) => `redis PING failed: ${err instanceof Error ? err.message : String(err)}`,
    );
    const ping = { since, answered };
    void answered.finally(() => {
      if (this.pending === ping) this.pending = undefined;
    });
    return ping;
  }
}

import { randomBytes } from 'node:crypto';
import { ADMIN_KEY_PATTERN } from '@agentcom/shared';
import { FLOOD_REFUSALS } from './gateway/flood-guard';
import { z } from 'zod';

/**
 * The hub's configuration. This module is the only reader of `process.env`: everything else
 * receives a frozen {@link HubConfig}. A malformed value fails at start with the variable's name.
 */
export interface HubConfig {
  /** `REDIS_URL`; undefined means: start the embedded `redis-server`. */
  readonly redisUrl: string | undefined;
  /** `PORT` (8080). */
  readonly port: number;
  /** `HOST` (0.0.0.0). */
  readonly host: string;
  /** `HUB_ID` (random): names this replica in agent records, events and logs. */
  readonly hubId: string;
  /** `AGENTCOM_ADMIN_KEY`: bearer key of the HTTP API (generated when `AGENTCOM_DEV=1`). */
  readonly adminKey: string;
  /** True when the admin key was generated (dev mode) and must be printed. */
  readonly adminKeyGenerated: boolean;
  /** `AGENTCOM_PREFIX` (`agentcom`): prefix of every Redis key. */
  readonly prefix: string;
  /** `LEASE_MS` (60000): BullMQ lock duration; a disconnected agent keeps its task this long. */
  readonly leaseMs: number;
  /** `HEARTBEAT_MS` (5000): sidecar heartbeat and lease-extension period. */
  readonly heartbeatMs: number;
  /** `ACK_TIMEOUT_MS` (10000): time an agent has to accept a pushed task; one that lets it pass rests in cooldown as long, twice as long at each further ack timeout in a row. */
  readonly ackTimeoutMs: number;
  /** `ACK_COOLDOWN_MAX_MS` (300000, 5 minutes): bound on that doubling cooldown; the first is always one ack timeout, so a value at or below `ACK_TIMEOUT_MS` turns the doubling off. See {@link DEFAULT_ACK_COOLDOWN_MAX_MS}. */
  readonly ackCooldownMaxMs: number;
  /** `DISPATCH_CONCURRENCY` (8): dispatch steps one replica runs at once per queue. */
  readonly dispatchConcurrency: number;
  /** `STALLED_INTERVAL_MS` (15000): BullMQ stalled-job check period. */
  readonly stalledIntervalMs: number;
  /** `MAX_STALLED_COUNT` (2): stalls after which a task fails instead of going back to wait. */
  readonly maxStalledCount: number;
  /** `RUN_TIMEOUT_GRACE_MS` (10000): after telling an agent its task timed out, how long it has to report before the hub fails the attempt itself. */
  readonly runTimeoutGraceMs: number;
  /** `SWEEP_MS` (1000): period of the sweeper, and of the dispatcher's safety tick up to 1 s. */
  readonly sweepMs: number;
  /** `SHUTDOWN_DELAY_MS` (0): on SIGTERM, time between `/readyz` turning 503 (sidecars told to move, new agent handshakes refused `E_UNAVAILABLE`) and closing sockets, for a load balancer to stop routing here. */
  readonly shutdownDelayMs: number;
  /** `HTTP_REQUEST_TIMEOUT_MS` (30000): time an HTTP request has to arrive whole, headers and body; then 400 and the connection closed. */
  readonly httpRequestTimeoutMs: number;
  /** `SHUTDOWN_GRACE_MS` (10000): bound on a graceful stop after the delay (half of it for waits on Redis, see `stop-bounds.ts`); the process exits 1 at delay + grace + 5 s. */
  readonly shutdownGraceMs: number;
  /** Finished tasks kept in Redis: `RETENTION_COMPLETED_COUNT` (10000) and `RETENTION_COMPLETED_AGE_S` (604800, 7 days); failed: `RETENTION_FAILED_COUNT` (50000), `RETENTION_FAILED_AGE_S` (2592000, 30 days). Older or extra ones are trimmed by BullMQ as new tasks finish. */
  readonly retention: {
    completed: { count: number; age: number };
    failed: { count: number; age: number };
  };
  /** `AUTH_FAIL_LIMIT` (20): failed sidecar handshakes per address per minute before `E_RATE_LIMITED`. */
  readonly authFailLimit: number;
  /** `AGENT_FLOOD_REFUSALS` (1000): events of one agent connection refused at once (then 100 a second) before it is closed for flooding (see `hub/src/gateway/flood-guard.ts`). */
  readonly agentFloodRefusals: number;
  /** `TRUST_PROXY` (0): behind one load balancer, the client address is the last `X-Forwarded-For` entry (the one it appended). */
  readonly trustProxy: boolean;
  /** `PING_INTERVAL_MS` (10000) and `PING_TIMEOUT_MS` (5000): Socket.IO liveness of each connection; a silent peer is dropped after their sum (Socket.IO's own defaults, 25 s + 20 s, keep a sidecar on a hung replica too long). */
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  /** `METRICS_LEADER_TTL_MS` (30000): lifetime of the metrics leader's lease (renewed every third of it); a new leader exports the cluster gauges this long after one vanished. */
  readonly metricsLeaderTtlMs: number;
  /** `EVENTS_MAX_LEN` (10000): approximate cap of the agent transition stream. */
  readonly eventsMaxLen: number;
  /** `LOG_LEVEL` (info). */
  readonly logLevel: string;
  /** `AGENTCOM_DATA_DIR` (`.agentcom`): where the embedded Redis keeps its AOF. */
  readonly dataDir: string;
  /** `AGENTCOM_REDIS_PORT` (6380): loopback port of the embedded Redis (used without REDIS_URL). */
  readonly embeddedRedisPort: number;
}

/**
 * Default bound on the cooldown of an agent that keeps letting ack timeouts pass (connected and
 * heartbeating, but never accepting: a wedged sidecar). Each miss delays its task by an ack
 * timeout; doubling the rest makes that rare (at the default 10 s ack timeout the bound is
 * reached after 6 misses, and the agent then delays one task by 10 s about every 5 minutes, not
 * every 20 s). It is bounded because the rest also outlasts the fault: an agent whose sidecar
 * recovers or is restarted (a reconnect does not end a cooldown) gets work again within 5 minutes,
 * and a queue whose only agent it is waits no longer than that for the next try.
 */
export const DEFAULT_ACK_COOLDOWN_MAX_MS = 300_000;

const intMs = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

const envSchema = z.object({
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
    .optional(),
  PORT: intMs(0, 65535).default(8080),
  HOST: z.string().min(1).default('0.0.0.0'),
  HUB_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, ".", "_" or "-" (at most 64)')
    .optional(),
  AGENTCOM_ADMIN_KEY: z
    .string()
    .min(16, 'must be at least 16 characters')
    .regex(
      ADMIN_KEY_PATTERN,
      'must be printable ASCII without spaces: it travels in an HTTP header (a second line in the value?)',
    )
    .optional(),
  AGENTCOM_DEV: z.enum(['0', '1']).optional(),
  AGENTCOM_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,32}$/, 'letters, digits, "_" or "-" (at most 32)')
    .default('agentcom'),
  LEASE_MS: intMs(1000, 86_400_000).default(60_000),
  HEARTBEAT_MS: intMs(100, 600_000).default(5000),
  ACK_TIMEOUT_MS: intMs(100, 600_000).default(10_000),
  ACK_COOLDOWN_MAX_MS: intMs(0, 86_400_000).default(DEFAULT_ACK_COOLDOWN_MAX_MS),
  DISPATCH_CONCURRENCY: intMs(1, 256).default(8),
  STALLED_INTERVAL_MS: intMs(100, 3_600_000).default(15_000),
  MAX_STALLED_COUNT: intMs(0, 1000).default(2),
  SWEEP_MS: intMs(50, 60_000).default(1000),
  RUN_TIMEOUT_GRACE_MS: intMs(0, 3_600_000).default(10_000),
  SHUTDOWN_GRACE_MS: intMs(0, 600_000).default(10_000),
  HTTP_REQUEST_TIMEOUT_MS: intMs(1000, 600_000).default(30_000),
  SHUTDOWN_DELAY_MS: intMs(0, 600_000).default(0),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  AGENTCOM_DATA_DIR: z.string().min(1).default('.agentcom'),
  RETENTION_COMPLETED_COUNT: intMs(0, 100_000_000).default(10_000),
  RETENTION_COMPLETED_AGE_S: intMs(1, 10 * 365 * 86_400).default(7 * 86_400),
  RETENTION_FAILED_COUNT: intMs(0, 100_000_000).default(50_000),
  RETENTION_FAILED_AGE_S: intMs(1, 10 * 365 * 86_400).default(30 * 86_400),
  AUTH_FAIL_LIMIT: intMs(1, 1_000_000).default(20),
  AGENT_FLOOD_REFUSALS: intMs(100, 1_000_000).default(FLOOD_REFUSALS),
  TRUST_PROXY: z.enum(['0', '1']).default('0'),
  EVENTS_MAX_LEN: intMs(100, 100_000_000).default(10_000),
  METRICS_LEADER_TTL_MS: intMs(300, 3_600_000).default(30_000),
  PING_INTERVAL_MS: intMs(100, 600_000).default(10_000),
  PING_TIMEOUT_MS: intMs(100, 600_000).default(5000),
  AGENTCOM_REDIS_PORT: intMs(1, 65535).default(6380),
});

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Variables whose value a refusal never repeats (it ends up in logs): a key, a password in a URL. */
const SECRET_VARIABLES: ReadonlySet<string> = new Set(['AGENTCOM_ADMIN_KEY', 'REDIS_URL']);

/** Parses an environment (defaults to `process.env`); throws {@link ConfigError} naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): HubConfig {
  // Empty is unset for every variable but this one, whose unset means something else altogether:
  // a `REDIS_URL: ${REDIS_URL}` that found nothing would have each replica start its own Redis.
  if (env.REDIS_URL === '') {
    throw new ConfigError(
      'REDIS_URL: set but empty; give the redis:// URL the replicas share, or unset it to start the embedded redis-server',
    );
  }
  const relevant = Object.fromEntries(
    Object.keys(envSchema.shape).flatMap((key) => {
      const value = env[key];
      return value === undefined || value === '' ? [] : [[key, value]];
    }),
  );
  const parsed = envSchema.safeParse(relevant);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = issue?.path[0] !== undefined ? String(issue.path[0]) : 'environment';
    const shown = SECRET_VARIABLES.has(name)
      ? 'the value is not shown: it may hold a secret'
      : `got ${JSON.stringify(relevant[name])}`;
    throw new ConfigError(`${name}: ${issue?.message ?? 'invalid'} (${shown})`);
  }
  const e = parsed.data;
  const dev = e.AGENTCOM_DEV === '1';
  if (!e.AGENTCOM_ADMIN_KEY && !dev) {
    throw new ConfigError(
      'AGENTCOM_ADMIN_KEY: required (at least 16 characters); set AGENTCOM_DEV=1 to generate one for development',
    );
  }
  if (e.HEARTBEAT_MS * 2 > e.LEASE_MS) {
    throw new ConfigError(`LEASE_MS: must be at least twice HEARTBEAT_MS (${e.HEARTBEAT_MS})`);
  }
  // A job's lock is taken for one lease when it is fetched, and extended only from the accept:
  // were the wait for the accept longer, the lock could run out first, BullMQ hand the job to
  // another agent, and a late accept (the script checks the record, not the lock) run it twice.
  if (e.ACK_TIMEOUT_MS >= e.LEASE_MS) {
    throw new ConfigError(
      `ACK_TIMEOUT_MS: must be below LEASE_MS (${e.LEASE_MS}): a task's lock must outlast the wait for its accept`,
    );
  }
  return Object.freeze({
    redisUrl: e.REDIS_URL,
    port: e.PORT,
    host: e.HOST,
    hubId: e.HUB_ID ?? `hub-${randomBytes(4).toString('hex')}`,
    adminKey: e.AGENTCOM_ADMIN_KEY ?? randomBytes(24).toString('base64url'),
    adminKeyGenerated: !e.AGENTCOM_ADMIN_KEY,
    prefix: e.AGENTCOM_PREFIX,
    leaseMs: e.LEASE_MS,
    heartbeatMs: e.HEARTBEAT_MS,
    ackTimeoutMs: e.ACK_TIMEOUT_MS,
    ackCooldownMaxMs: e.ACK_COOLDOWN_MAX_MS,
    dispatchConcurrency: e.DISPATCH_CONCURRENCY,
    stalledIntervalMs: e.STALLED_INTERVAL_MS,
    maxStalledCount: e.MAX_STALLED_COUNT,
    sweepMs: e.SWEEP_MS,
    runTimeoutGraceMs: e.RUN_TIMEOUT_GRACE_MS,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    httpRequestTimeoutMs: e.HTTP_REQUEST_TIMEOUT_MS,
    shutdownDelayMs: e.SHUTDOWN_DELAY_MS,
    logLevel: e.LOG_LEVEL,
    dataDir: e.AGENTCOM_DATA_DIR,
    embeddedRedisPort: e.AGENTCOM_REDIS_PORT,
    retention: {
      completed: { count: e.RETENTION_COMPLETED_COUNT, age: e.RETENTION_COMPLETED_AGE_S },
      failed: { count: e.RETENTION_FAILED_COUNT, age: e.RETENTION_FAILED_AGE_S },
    },
    authFailLimit: e.AUTH_FAIL_LIMIT,
    agentFloodRefusals: e.AGENT_FLOOD_REFUSALS,
    trustProxy: e.TRUST_PROXY === '1',
    eventsMaxLen: e.EVENTS_MAX_LEN,
    metricsLeaderTtlMs: e.METRICS_LEADER_TTL_MS,
    pingIntervalMs: e.PING_INTERVAL_MS,
    pingTimeoutMs: e.PING_TIMEOUT_MS,
  });
}

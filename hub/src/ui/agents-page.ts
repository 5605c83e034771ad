import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Server } from 'socket.io';
import type { AgentStore } from '../fsm/agent-store';
import type { Logger } from '../logger';
import type { RedisKeys } from '../redis/keys';
import type { RedisProblemCheck } from '../redis/redis-probe';
import { registerPageRoutes } from './page-routes';
import { createSnapshotReader, type QueueCountsSource } from './snapshot';
import { TransitionTailer } from './transition-tailer';
import { createUiNamespace } from './ui-namespace';
import { UiSessions } from './ui-session';

export interface AgentsPageOptions {
  /** Routes are added to it: call before `listen`. */
  app: FastifyInstance;
  /** The replica's Socket.IO server; the page uses its `/ui` namespace. */
  io: Server;
  /** Command connection: snapshots and UI sessions. */
  redis: Redis;
  /**
   * Whether Redis answers (`RedisProbe`): while it does not, `GET /` answers 503 `E_UNAVAILABLE`,
   * `/ui` handshakes are refused `E_UNAVAILABLE` and `snapshot:get` answers an error, each at
   * once, instead of waiting in ioredis' offline queue for the whole outage.
   */
  redisProblem: RedisProblemCheck;
  keys: RedisKeys;
  agents: AgentStore;
  /** The page and its script need it (Bearer, or Basic with it as the password). */
  adminKey: string;
  hubId: string;
  logger: Logger;
  /**
   * Makes the dedicated connection the tailer blocks on (XREAD BLOCK): called each time the
   * tailer starts (the first browser of this replica arrives); it is closed when the tailer stops.
   */
  blockingRedis: () => Redis;
  /** BullMQ counts per queue name (e.g. from `summarizeQueues`). Default: names without counts. */
  queueCounts?: QueueCountsSource;
  /** Lifetime of an unused UI session (ms). Default 10 minutes. */
  sessionTtlMs?: number;
  /** Lifetime of a UI session from its minting, used or not (ms). Default 12 hours. */
  sessionMaxLifetimeMs?: number;
  /** Longest XREAD BLOCK of the tailer (ms). Default 5000. */
  tailBlockMs?: number;
  /** How long a built snapshot answers the other tabs (ms). Default `SNAPSHOT_REUSE_MS`. */
  snapshotReuseMs?: number;
}

/**
 * The live agents page at `/`: every agent with its state, task and counters, queue counts and
 * the latest transitions, kept live over the `/ui` Socket.IO namespace from the Redis events
 * stream (which every replica with a browser connected tails, so the page sees transitions made
 * anywhere; a replica without one reads nothing).
 */
export function registerAgentsPage(options: AgentsPageOptions): { close(): Promise<void> } {
  const { app, io, redis, keys, agents, adminKey, hubId, redisProblem } = options;
  const logger = options.logger.child({ component: 'agents-page' });
  const sessions = new UiSessions({
    redis,
    keys,
    hubId,
    adminKey,
    ...(options.sessionTtlMs === undefined ? {} : { ttlMs: options.sessionTtlMs }),
    ...(options.sessionMaxLifetimeMs === undefined
      ? {}
      : { maxLifetimeMs: options.sessionMaxLifetimeMs }),
  });
  const readSnapshot = createSnapshotReader({
    redis,
    keys,
    agents,
    hubId,
    logger,
    queueCounts: options.queueCounts ?? (async () => ({})),
  });
  registerPageRoutes(app, { adminKey, hubId, sessions, redisProblem });
  const tailer = new TransitionTailer({
    connect: options.blockingRedis,
    stream: keys.events,
    logger,
    onTransitions: (events) => ui.broadcastLocal(events),
    ...(options.tailBlockMs === undefined ? {} : { blockMs: options.tailBlockMs }),
  });
  const ui = createUiNamespace({
    io,
    sessions,
    readSnapshot,
    tail: tailer,
    logger,
    redisProblem,
    now: agents.now,
    ...(options.snapshotReuseMs === undefined ? {} : { snapshotReuseMs: options.snapshotReuseMs }),
  });

  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        ui.nsp.local.disconnectSockets(true);
        await tailer.close();
      })();
      return closing;
    },
  };
}

import { AGENT_NAMESPACE, MAX_MESSAGE_BYTES } from '@agentcom/shared';
import { createAdapter } from '@socket.io/redis-adapter';
import type { FastifyInstance } from 'fastify';
import { Server } from 'socket.io';
import { AgentControl } from './agents/agent-control';
import { Presence } from './agents/presence';
import type { HubConfig } from './config';
import { AssignmentService } from './dispatch/assignments';
import { Dispatcher } from './dispatch/dispatcher';
import { LeaseKeeper } from './dispatch/lease-keeper';
import type { AgentNotifier } from './dispatch/notifier';
import { Sweeper } from './dispatch/sweeper';
import { AgentStore } from './fsm/agent-store';
import { AgentGateway } from './gateway/agent-gateway';
import { HandshakeLimiter } from './gateway/handshake-limiter';
import { textOnlyParser } from './gateway/text-only-parser';
import { registerAgentsPage } from './ui/agents-page';
import { createHttpApp } from './http/app';
import { registerBullBoard } from './http/bull-board';
import { rejectWhileRedisDown } from './http/redis-gate';
import { registerMetricsRoute } from './http/routes/metrics';
import type { Logger } from './logger';
import { ClusterGauges } from './metrics/cluster-gauges';
import { HubMetrics } from './metrics/hub-metrics';
import { TaskStartTimes } from './metrics/task-start-times';
import { QueueRegistry } from './queues/queue-registry';
import {
  backfillServedQueues,
  countsByQueue,
  summarizeQueues,
  type QueueSummaryDeps,
} from './queues/queue-summary';
import { createRedisConnections, type RedisConnections } from './redis/connections';
import { RedisKeys } from './redis/keys';
import { RedisClock } from './redis/redis-clock';
import { RedisProbe } from './redis/redis-probe';
import { agentScripts } from './redis/scripts';
import {
  DISCONNECTS_BOUND_MS,
  StopBudget,
  httpCloseBoundMs,
  redisStopBudgetMs,
} from './stop-bounds';
import { TaskCancellation } from './tasks/task-cancellation';
import { listTasks } from './tasks/task-listing';
import { IdempotencyKeys } from './tasks/idempotency-keys';
import { TaskService } from './tasks/task-service';

/** A running hub replica. */
export interface Hub {
  readonly config: HubConfig;
  readonly app: FastifyInstance;
  readonly io: Server;
  readonly redis: RedisConnections;
  readonly keys: RedisKeys;
  readonly agents: AgentStore;
  readonly tasks: TaskService;
  readonly gateway: AgentGateway;
  readonly dispatcher: Dispatcher;
  /** The leases this replica extends (tasks of the agents connected here). */
  readonly leases: LeaseKeeper;
  readonly metrics: HubMetrics;
  /** The port actually listened on. */
  readonly port: number;
  /** Graceful stop: not ready, sidecars told to move, then sockets, workers and Redis closed in order. */
  close(): Promise<void>;
}

/** What a replica takes besides its configuration. */
export interface HubOptions {
  /** This machine's clock (ms since the epoch). Default `Date.now`; tests skew it. */
  now?: () => number;
}

/**
 * Composition root of one replica: wires Redis, BullMQ, the agent store, dispatch, the Socket.IO
 * gateway and the HTTP API on one port, and starts listening. `config.redisUrl` must be set
 * (main.ts starts the embedded Redis when it is not).
 */
export async function startHub(
  config: HubConfig,
  logger: Logger,
  options: HubOptions = {},
): Promise<Hub> {
  if (!config.redisUrl) throw new Error('startHub needs a redisUrl');
  const metrics = new HubMetrics(config.hubId);
  const redis = createRedisConnections(config.redisUrl, logger, {
    onError: () => metrics.redisErrors.inc(),
    onPublishFailure: () => metrics.adapterPublishFailures.inc(),
  });
  const keys = new RedisKeys(config.prefix);
  const scripts = agentScripts(redis.command);
  // the clock of every time replicas compare (measured before the first write, below)
  const clock = new RedisClock({ redis: redis.command, localNow: options.now });
  const agents = new AgentStore({
    redis: redis.command,
    scripts,
    keys,
    hubId: config.hubId,
    maxEvents: config.eventsMaxLen,
    now: clock.now,
  });

  // Late-bound: the dispatcher and the notifier need the gateway, which needs the services.
  let dispatcher: Dispatcher | undefined;
  let gateway: AgentGateway | undefined;
  const onAgentIdle = (queues: readonly string[]): void => dispatcher?.triggerAll(queues);
  const onQueueWork = (queue: string): void => dispatcher?.trigger(queue);
  const notifier: AgentNotifier = {
    assign: (agentId, message, socketId) => gateway?.assign(agentId, message, socketId),
    cancel: (agentId, message) => gateway?.cancel(agentId, message),
    closeStaleTokenConnections: (agentId, message) =>
      gateway?.closeStaleTokenConnections(agentId, message),
  };

  const starts = new TaskStartTimes();
  const idempotency = new IdempotencyKeys({ redis: redis.command, keys, logger });
  const queues = new QueueRegistry({
    connection: redis.bullmq,
    keys,
    leaseMs: config.leaseMs,
    stalledIntervalMs: config.stalledIntervalMs,
    maxStalledCount: config.maxStalledCount,
    logger,
    onWaiting: onQueueWork,
  });
  const leases: LeaseKeeper = new LeaseKeeper({
    queues,
    leaseMs: config.leaseMs,
    heartbeatMs: config.heartbeatMs,
    logger,
    onLeaseLost: (agentId, task) => {
      assignments
        .leaseLost(agentId, task, (cancel) => notifier.cancel(agentId, cancel))
        .catch((err: unknown) =>
          logger.warn(
            { agentId, taskId: task.taskId, err: String(err) },
            'lease lost: release failed',
          ),
        );
    },
  });
  const assignments = new AssignmentService({
    redis: redis.command,
    keys,
    agents,
    queues,
    leases,
    retention: config.retention,
    logger,
    metrics,
    ackTimeoutMs: config.ackTimeoutMs,
    leaseMs: config.leaseMs,
    onClaimed: (step) => dispatcher?.continueClaim(step),
    onAgentIdle,
    onTaskWaiting: onQueueWork,
    idempotency,
  });
  const presence = new Presence({
    redis: redis.command,
    keys,
    agents,
    queues,
    leases,
    hubId: config.hubId,
    leaseMs: config.leaseMs,
    logger,
    onAgentIdle,
    onTaskWaiting: onQueueWork,
  });
  const control = new AgentControl(agents, onAgentIdle, notifier, (record) =>
    presence.requeue(record),
  );
  const tasks = new TaskService({
    redis: redis.command,
    keys,
    queues,
    agents,
    metrics,
    starts,
    retention: config.retention,
    idempotency,
    onCreated: onQueueWork,
    now: clock.now,
  });
  const cancellation = new TaskCancellation({
    redis: redis.command,
    keys,
    tasks,
    notifier,
    idempotency,
  });
  const cluster = new ClusterGauges({
    redis: redis.command,
    scripts,
    keys,
    hubId: config.hubId,
    queues,
    leaderTtlMs: config.metricsLeaderTtlMs,
  });

  // whether Redis answers (a frozen one keeps its connections `ready`): /readyz and the API gate
  const redisProbe = new RedisProbe(redis.command);
  const queueSummaryDeps: QueueSummaryDeps = { redis: redis.command, keys, queues, agents };
  let draining = false;
  let bullBoard: { sync(): Promise<void> } | undefined;
  const app = createHttpApp({
    logger,
    adminKey: config.adminKey,
    requestTimeoutMs: config.httpRequestTimeoutMs,
    services: {
      tasks,
      cancellation,
      agents,
      control,
      listTasks: (query) => listTasks({ redis: redis.command, keys, queues, tasks }, query),
      summarizeQueues: () => summarizeQueues(queueSummaryDeps),
    },
    readiness: {
      check: async () => {
        const problems: string[] = [];
        if (draining) problems.push('draining');
        const redisProblem = await redisProbe.problem();
        if (redisProblem !== undefined) problems.push(redisProblem);
        if (redis.sub.status !== 'ready') problems.push(`adapter subscriber ${redis.sub.status}`);
        return problems;
      },
    },
    extendProtected: (api) => registerMetricsRoute(api, metrics, cluster),
    extend: (root) => {
      bullBoard = registerBullBoard(root, queues, config.adminKey, idempotency);
    },
    closing: () => draining,
  });
  app.addHook(
    'onRequest',
    rejectWhileRedisDown(() =>
      redis.bullmq.status === 'ready' ? redisProbe.problem() : `redis ${redis.bullmq.status}`,
    ),
  );

  const io = new Server(app.server, {
    transports: ['websocket'],
    maxHttpBufferSize: MAX_MESSAGE_BYTES,
    // JSON only: a binary packet closes its connection instead of parking its attachments
    parser: textOnlyParser,
    pingInterval: config.pingIntervalMs,
    pingTimeout: config.pingTimeoutMs,
    serveClient: false,
    adapter: createAdapter(redis.pub, redis.sub, { key: keys.socketIoChannel }),
  });
  gateway = new AgentGateway({
    io,
    agents,
    presence,
    assignments,
    control,
    logger,
    onRejectedPayload: () => metrics.payloadsRejected.inc(),
    onFloodDisconnect: () => metrics.agentDisconnects.inc({ reason: 'flood' }),
    limiter: new HandshakeLimiter(redis.command, keys, config.authFailLimit),
    floodRefusals: config.agentFloodRefusals,
    hubId: config.hubId,
    trustProxy: config.trustProxy,
    redisProblem: () => redisProbe.problem(),
  });
  metrics.trackSockets(() => gateway?.localSocketCount() ?? 0);
  const agentsPage = registerAgentsPage({
    app,
    io,
    redis: redis.command,
    redisProblem: () => redisProbe.problem(),
    keys,
    agents,
    adminKey: config.adminKey,
    hubId: config.hubId,
    logger,
    // a connection of its own for the blocking XREAD
    blockingRedis: () => redis.command.duplicate({ connectionName: 'agentcom:ui-events' }),
    queueCounts: (records) => countsByQueue(queueSummaryDeps, records),
  });
  dispatcher = new Dispatcher({
    keys,
    agents,
    queues,
    notifier,
    ackTimeoutMs: config.ackTimeoutMs,
    leaseMs: config.leaseMs,
    concurrency: config.dispatchConcurrency,
    logger,
    metrics,
    starts,
    idempotency,
  });
  const sweeper = new Sweeper({
    redis: redis.command,
    keys,
    clock,
    agents,
    presence,
    notifier,
    hubId: config.hubId,
    leaseMs: config.leaseMs,
    ackTimeoutMs: config.ackTimeoutMs,
    ackCooldownMaxMs: config.ackCooldownMaxMs,
    heartbeatMs: config.heartbeatMs,
    sweepMs: config.sweepMs,
    runTimeoutGraceMs: config.runTimeoutGraceMs,
    logger,
    onAgentIdle,
    failAttempt: (agentId, report) => assignments.fail(agentId, report),
    onTick: async () => {
      // beside the discovery (neither needs the other); waited for either way, so that a tick
      // that fails is over only once it is (no two passes run at once; `stop` waits for it)
      const settling = idempotency.settleDeferred(); // never throws
      const names = await queues.discover().finally(() => settling);
      // on Redis's clock, as the claims judge delays (see AgentStore.claimCall)
      await queues.promoteDue(clock.now());
      dispatcher?.triggerAll(names);
      await bullBoard?.sync();
    },
  });

  await clock.measure();
  await queues.discover();
  await backfillServedQueues(queueSummaryDeps);
  await bullBoard?.sync();
  await sweeper.disconnectEarlierSelf();
  leases.start();
  sweeper.start();
  cluster.start();
  await app.listen({ port: config.port, host: config.host });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info({ port, namespace: AGENT_NAMESPACE }, 'hub replica listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // 1. not ready (the load balancer stops routing here), no new pushes from this replica,
      // sidecars told to move (keeping their tasks: the lease covers the move) and new handshakes
      // refused: none of it needs Redis, so it happens at once even while Redis is away or frozen
      draining = true;
      const dispatchStopped = dispatcher?.stop() ?? Promise.resolve();
      gateway?.drainLocal();
      if (config.shutdownDelayMs > 0) {
        await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs));
      }
      // 2. from here each wait on work that needs Redis comes out of one budget: a stop while
      // Redis does not answer goes on, and ends within the exit deadline (stop-bounds.ts)
      const budget = new StopBudget(redisStopBudgetMs(config), (what) =>
        logger.warn({ what }, 'graceful stop: Redis did not answer in time, going on without'),
      );
      await budget.wait('dispatch steps under way', dispatchStopped);
      // 3. close the remaining sockets and record their disconnects while Redis is still there;
      // io.close also closes the HTTP server, which waits for its connections: clients were told
      // to close them (Connection: close while draining), one still busy after the bound is cut
      await budget.wait('the agents page', agentsPage.close());
      const cut = setTimeout(() => app.server.closeAllConnections(), httpCloseBoundMs(config));
      await new Promise<void>((resolve) => {
        void io.close(() => resolve());
      });
      clearTimeout(cut);
      await gateway?.settled(DISCONNECTS_BOUND_MS);
      gateway?.stop();
      // 4. timers, HTTP, BullMQ, Redis, in that order
      await budget.wait('the sweep', sweeper.stop());
      await budget.wait('the lease tick', leases.stop());
      await budget.wait('the metrics lease', cluster.stop());
      await app.close().catch(() => undefined);
      await budget.wait('the BullMQ queues', queues.close());
      if (!(await budget.wait('QUIT of the Redis connections', redis.close()))) {
        redis.disconnect();
      }
      logger.info('hub replica stopped');
    })();
    return closing;
  };

  return {
    config,
    app,
    io,
    redis,
    keys,
    agents,
    tasks,
    gateway,
    dispatcher,
    leases,
    metrics,
    port,
    close,
  };
}

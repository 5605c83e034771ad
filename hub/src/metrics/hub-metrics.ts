import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * This replica's Prometheus metrics (base units, `_total` counters, no per-task or per-agent
 * labels). Counters count what this replica did; each event is counted by exactly one replica,
 * so a sum over replicas is the cluster total. Cluster-wide gauges live in `ClusterGauges`.
 */
export class HubMetrics {
  readonly registry = new Registry();

  readonly tasksCreated = new Counter({
    name: 'agentcom_tasks_created_total',
    help: 'Tasks this replica created (POST /v1/tasks and /v1/tasks/batch; not idempotent duplicates)',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  readonly tasksCompleted = new Counter({
    name: 'agentcom_tasks_completed_total',
    help: 'Task completions applied by this replica',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  readonly completionsAtOnce = new Counter({
    name: 'agentcom_completions_at_once_total',
    help: 'Of the completions: those applied in one script with the next dispatch step (the rest went step by step)',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  readonly pushesResent = new Counter({
    name: 'agentcom_task_pushes_resent_total',
    help: 'Pushes sent again by this replica: the agent, connected, named no task in a heartbeat well after its assignment (the first push was lost)',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  readonly tasksFailed = new Counter({
    name: 'agentcom_tasks_failed_total',
    help: 'Failed attempts applied by this replica. outcome: retried (runs again), failed (final), cancelled, requeued (rate limit: back to wait, no attempt used)',
    labelNames: ['queue', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly dispatchLatency = new Histogram({
    name: 'agentcom_dispatch_latency_seconds',
    help: 'From a task being created (or due, when delayed) to its first push to an agent: below the millisecond when the replica that added the task pushed it, in whole milliseconds otherwise',
    labelNames: ['queue'] as const,
    // a bound at each target (p50 ≤ 2 ms, p99 ≤ 10 ms): the share of dispatches within it is
    // read from its bucket, not interpolated across a wider one
    buckets: [
      0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
      2.5, 5, 10,
    ],
    registers: [this.registry],
  });

  readonly runTime = new Histogram({
    name: 'agentcom_task_run_seconds',
    help: 'From accept to the report of an attempt',
    labelNames: ['queue', 'outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
    registers: [this.registry],
  });

  readonly payloadsRejected = new Counter({
    name: 'agentcom_socket_payloads_rejected_total',
    help: 'Socket payloads refused at the boundary by this replica',
    registers: [this.registry],
  });

  readonly agentDisconnects = new Counter({
    name: 'agentcom_agent_disconnects_total',
    help: 'Agent connections this replica closed for misbehaving, by reason. flood: kept sending events the replica refused unread (beyond the in-flight limit, without an ack, invalid or unknown), or accepted ones costly to read and decode (each counts its size and its decoding time)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly redisErrors = new Counter({
    name: 'agentcom_redis_errors_total',
    help: 'Redis connection errors seen by this replica',
    registers: [this.registry],
  });

  readonly adapterPublishFailures = new Counter({
    name: 'agentcom_redis_adapter_publish_failures_total',
    help: "Publishes of the Socket.IO adapter that failed: a push or broadcast for another replica's sockets that it never got (a lost push is sent again at the agent's heartbeat)",
    registers: [this.registry],
  });

  constructor(hubId: string) {
    this.registry.setDefaultLabels({ hub: hubId });
    collectDefaultMetrics({ register: this.registry, prefix: 'agentcom_' });
    // exported at 0 from the start: an alert on increase() sees the first disconnect too
    this.agentDisconnects.inc({ reason: 'flood' }, 0);
  }

  /** Registers the gauge of agent sockets connected to this replica. */
  trackSockets(count: () => number): void {
    new Gauge({
      name: 'agentcom_sockets',
      help: 'Agent sockets connected to this replica',
      registers: [this.registry],
      collect() {
        this.set(count());
      },
    });
  }
}

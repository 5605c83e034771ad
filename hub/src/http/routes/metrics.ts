import type { FastifyInstance } from 'fastify';
import type { ClusterGauges } from '../../metrics/cluster-gauges';
import type { HubMetrics } from '../../metrics/hub-metrics';

/**
 * How long `/metrics` waits for the cluster gauges. They are read from Redis, whose commands wait
 * for it to come back: without a bound, a Redis outage left every replica's `/metrics` hanging,
 * and the per-replica metrics (Redis errors among them) unscrapeable exactly then.
 */
export const CLUSTER_GAUGES_BOUND_MS = 2000;

/** Prometheus text: this replica's metrics, plus the cluster gauges when it is the metrics leader. */
export function registerMetricsRoute(
  app: FastifyInstance,
  metrics: HubMetrics,
  cluster: ClusterGauges,
): void {
  app.get('/metrics', async (request, reply) => {
    const [own, clusterText] = await Promise.all([
      metrics.registry.metrics(),
      bounded(cluster.render(), CLUSTER_GAUGES_BOUND_MS).catch((err: unknown) => {
        // this replica's metrics go out alone; the gauges come back with Redis
        request.log.warn({ err: String(err) }, 'cluster gauges left out of /metrics');
        return '';
      }),
    ]);
    return reply.header('content-type', metrics.registry.contentType).send(own + clusterText);
  });
}

/** `promise`, or a rejection once `ms` have passed. */
async function bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

import type { FastifyInstance } from 'fastify';
import type { ClusterGauges } from '../../metrics/cluster-gauges';
import type { HubMetrics } from '../../metrics/hub-metrics';

/** Prometheus text: this replica's metrics, plus the cluster gauges when it is the metrics leader. */
export function registerMetricsRoute(
  app: FastifyInstance,
  metrics: HubMetrics,
  cluster: ClusterGauges,
): void {
  app.get('/metrics', async (_request, reply) => {
    const body = (await metrics.registry.metrics()) + (await cluster.render());
    return reply.header('content-type', metrics.registry.contentType).send(body);
  });
}

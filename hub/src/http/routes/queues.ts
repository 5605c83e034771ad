import type { FastifyInstance } from 'fastify';
import type { HttpServices } from '../services';

export function registerQueueRoutes(app: FastifyInstance, services: HttpServices): void {
  app.get('/v1/queues', async () => ({ queues: await services.summarizeQueues() }));
}

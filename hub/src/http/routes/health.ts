import type { FastifyInstance } from 'fastify';

export interface Readiness {
  /** Reasons the replica is not ready; empty when it is. */
  check(): Promise<string[]>;
}

/** Liveness checks nothing but the process; readiness checks Redis, the adapter and draining. */
export function registerHealthRoutes(app: FastifyInstance, readiness: Readiness): void {
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_request, reply) => {
    const problems = await readiness.check();
    if (problems.length > 0) return reply.status(503).send({ ok: false, problems });
    return { ok: true };
  });
}

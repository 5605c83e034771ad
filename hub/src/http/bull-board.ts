import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import type { QueueRegistry } from '../queues/queue-registry';
import type { IdempotencyKeys } from '../tasks/idempotency-keys';
import { requireAdminOrChallenge } from './admin-auth';

export const BULL_BOARD_PATH = '/admin/queues';

/** Bull Board's retry of one job (its route, as Fastify names it). */
const RETRY_JOB_ROUTE = `${BULL_BOARD_PATH}/api/queues/:queueName/:jobId/retry`;

/**
 * Bull Board at /admin/queues, behind the admin key (Basic or Bearer; a browser gets a Basic
 * challenge), never shown in a frame of another page. It lists every queue found in Redis, not a fixed list: `sync()` adds the queues
 * other replicas created since (called from the sweeper's tick).
 * A job retried from it gets its idempotency key back for as long as an unfinished task's, as a
 * retry through the API does (Bull Board calls BullMQ's `retry`, which leaves the key to expire
 * 24 h after the failure: a retried task still waiting then could be created twice). Its "retry
 * all" does not (which jobs it moved is not known): their keys keep the rest of their 24 h.
 */
export function registerBullBoard(
  app: FastifyInstance,
  queues: QueueRegistry,
  adminKey: string,
  idempotency: IdempotencyKeys,
): { sync(): Promise<void> } {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BULL_BOARD_PATH);
  const board = createBullBoard({
    queues: [],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'agentcom' } },
  });
  const shown = new Set<string>();
  const sync = async (): Promise<void> => {
    for (const name of await queues.discover()) {
      if (shown.has(name)) continue;
      const handle = await queues.get(name);
      board.addQueue(new BullMQAdapter(handle.queue));
      shown.add(name);
    }
  };
  void app.register(async (scope) => {
    scope.addHook('onRequest', requireAdminOrChallenge(adminKey));
    // never framed by another page (as the agents page): a browser that sends the cached Basic
    // credentials to a cross-site frame would let that page trick clicks on pause, retry, clean
    scope.addHook('onSend', async (_request, reply, payload) => {
      void reply.header('x-frame-options', 'DENY');
      void reply.header('content-security-policy', "frame-ancestors 'none'");
      return payload;
    });
    scope.addHook('onResponse', async (request, reply) => {
      if (request.routeOptions.url !== RETRY_JOB_ROUTE || reply.statusCode >= 300) return;
      const { queueName, jobId } = request.params as { queueName: string; jobId: string };
      await idempotency.settleStored(queueName, jobId).catch(() => undefined);
    });
    await scope.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
  });
  return { sync };
}

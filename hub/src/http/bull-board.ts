import { createBullBoard } from '@bull-board/api';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import type { QueueRegistry } from '../queues/queue-registry';
import type { IdempotencyKeys } from '../tasks/idempotency-keys';
import { requireAdminOrChallenge } from './admin-auth';
import { TaskQueueAdapter } from './bull-board-adapter';

export const BULL_BOARD_PATH = '/admin/queues';

/**
 * Bull Board at /admin/queues, behind the admin key (Basic or Bearer; a browser gets a Basic
 * challenge), never shown in a frame of another page. It lists every queue found in Redis, not a fixed list: `sync()` adds the queues
 * other replicas created since (called from the sweeper's tick).
 * Its retries and cleans leave idempotency keys as agentcom's own paths do (`TaskQueueAdapter`):
 * a retried task's key holds again for as long as an unfinished task's, a cleaned finished
 * task's keeps the rest of its 24 h.
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
      board.addQueue(new TaskQueueAdapter(handle.queue, idempotency, app.log));
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
    await scope.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
  });
  return { sync };
}

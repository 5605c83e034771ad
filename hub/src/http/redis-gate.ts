import { AppError } from '@agentcom/shared';
import type { onRequestHookHandler } from 'fastify';
import { errorBody } from './errors';

/** The API's routes: the ones that read or write Redis for their answer. */
export const API_PREFIX = '/v1/';

/**
 * Answers API requests `503 E_UNAVAILABLE` at once while `redisDown()` says a connection the
 * API needs is not ready. Without it a request waited in ioredis' offline queue for as long as
 * Redis was away (hub memory growing with every request), and ran when Redis came back: a task
 * whose client had given up (no 201) was created and executed anyway, and created twice by a
 * client that retried. /metrics, /healthz and /readyz keep answering.
 */
export function rejectWhileRedisDown(redisDown: () => string | undefined): onRequestHookHandler {
  return (request, reply, done) => {
    const problem = request.url.startsWith(API_PREFIX) ? redisDown() : undefined;
    if (problem === undefined) {
      done();
      return;
    }
    const error = new AppError('E_UNAVAILABLE', `${problem}; retry later`);
    void reply.status(error.httpStatus).send(errorBody(error.code, error.message));
  };
}

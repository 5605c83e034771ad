import { AppError } from '@agentcom/shared';
import type { onRequestHookHandler } from 'fastify';
import { BULL_BOARD_PATH } from './bull-board';
import { errorBody } from './errors';

/** The API's routes: the ones that read or write Redis for their answer. */
export const API_PREFIX = '/v1/';

/** Routes that wait for Redis: the API's and Bull Board's JSON API (its page and assets do not). */
const GATED_PREFIXES = [API_PREFIX, `${BULL_BOARD_PATH}/api/`];

/**
 * Answers API requests `503 E_UNAVAILABLE` at once while `redisDown()` says what is wrong with
 * Redis: a connection the API needs not ready, or Redis not answering (see `RedisProbe`: a
 * frozen Redis keeps its connections `ready`). Without it a request waited in ioredis' offline
 * queue for as long as Redis was away (hub memory growing with every request), and ran when
 * Redis came back: a task whose client had given up (no 201) was created and executed anyway,
 * and created twice by a client that retried (a Bull Board click, such as pausing a queue, too).
 * /metrics, /healthz and /readyz keep answering. A request is judged by the route the router
 * matched, not by its URL as sent: `/v%31/tasks` and `GET http://host/v1/tasks` reach `/v1/tasks`.
 * `redisDown` answers synchronously while it knows; a promise when it has to ask Redis.
 */
export function rejectWhileRedisDown(
  redisDown: () => string | undefined | Promise<string | undefined>,
): onRequestHookHandler {
  return (request, reply, done) => {
    const path = request.routeOptions.url ?? request.url;
    const gated = GATED_PREFIXES.some((prefix) => path.startsWith(prefix));
    const problem = gated ? redisDown() : undefined;
    const answer = (found: string | undefined): void => {
      if (found === undefined) {
        done();
        return;
      }
      const error = new AppError('E_UNAVAILABLE', `${found}; retry later`);
      void reply.status(error.httpStatus).send(errorBody(error.code, error.message));
    };
    if (problem instanceof Promise) void problem.then(answer, () => answer('redis check failed'));
    else answer(problem);
  };
}

import { noBodySchema } from '@agentcom/shared';
import type { FastifyRequest } from 'fastify';
import { parseOrThrow } from './validate';

/**
 * The request's body as sent, `undefined` when it has no bytes: Fastify reads an empty body of a
 * non-JSON type as `''`, as it reads the JSON string `""` (an empty JSON body it refuses itself,
 * for every route), so an empty string is no body unless the JSON parser made it. Not the
 * `content-length`: an empty body may come without one (fetch sends none on a DELETE) or chunked.
 * For routes that take no body (`noBodySchema`).
 */
export function sentBody(request: FastifyRequest): unknown {
  const mediaType = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  return request.body === '' && mediaType !== 'application/json' ? undefined : request.body;
}

/** Refuses (`E_VALIDATION`) a body sent to a route that takes none (`noBodySchema`). */
export function takeNoBody(request: FastifyRequest): void {
  parseOrThrow(noBodySchema, sentBody(request), 'body');
}

import { z } from 'zod';

/** `{}`: the one JSON body a route that takes none accepts (for clients that always send one). */
export const emptyBodySchema = z.object({}).strict();

/**
 * The body of a route that takes none (`POST /v1/agents/:id/drain`, ...), as parsed: absent
 * (`undefined`: the route reads a body of no bytes as absent too) or `{}`. Anything else is
 * refused rather than ignored, so that a client that meant to pass something (a reason, options)
 * learns that the route does not read it.
 */
export const noBodySchema = z
  .unknown()
  .refine((body) => body === undefined || emptyBodySchema.safeParse(body).success, {
    message: 'this route takes no body: send none, or {}',
  });

/**
 * Exponential backoff with jitter, the way agentcom's clients wait between tries: `baseMs` at the
 * first try, doubled at each further one, spread over ±50 % (clients that failed together, as all
 * the agents of a replica that died, do not come back together), then capped at `maxMs`.
 */
export interface BackoffOptions {
  /** The delay before the first retry, before jitter. */
  baseMs: number;
  /** No delay is longer than this (jitter included). Default: no cap. */
  maxMs?: number;
  /** A number in [0, 1): the jitter's source (`Math.random` by default). */
  random?: () => number;
}

/** Doublings past which any delay is capped anyway (2^30 × 1 ms is over 12 days). */
const MAX_DOUBLINGS = 30;

/** The delay in whole ms before try `attempt + 1`, after `attempt` (1, 2, …) failed tries. */
export function backoffMs(attempt: number, options: BackoffOptions): number {
  const { baseMs, maxMs = Number.POSITIVE_INFINITY, random = Math.random } = options;
  const doublings = Math.min(Math.max(Math.floor(attempt) - 1, 0), MAX_DOUBLINGS);
  return Math.round(Math.min(baseMs * 2 ** doublings * (0.5 + random()), maxMs));
}

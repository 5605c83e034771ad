/**
 * BullMQ reports a refused job operation (missing job, missing or mismatched lock, wrong state)
 * as an Error carrying a negative numeric `code`. For agentcom each of these means the
 * assignment is no longer current. Anything else (a connection error) is not.
 */
export function isStaleAssignmentError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as Error & { code?: unknown }).code;
  return typeof code === 'number' && code < 0;
}

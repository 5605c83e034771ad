import { randomUUID } from 'node:crypto';

/**
 * The fencing token of one assignment; it is also the BullMQ lock token of the job, so BullMQ
 * itself refuses a stale holder. It starts with the agent id, so a job's lock says who holds it.
 */
export function newAssignmentToken(agentId: string): string {
  return `${agentId}:${randomUUID()}`;
}

export function agentIdOfToken(token: string): string | undefined {
  const at = token.lastIndexOf(':');
  return at > 0 ? token.slice(0, at) : undefined;
}

/**
 * The fencing token of one assignment is `<agentId>:<uuid>`, made when the agent is claimed
 * (`claimIdle.lua`); it is also the BullMQ lock token of the job, so BullMQ itself refuses a
 * stale holder, and a job's lock says who holds it.
 */
export function agentIdOfToken(token: string): string | undefined {
  const at = token.lastIndexOf(':');
  return at > 0 ? token.slice(0, at) : undefined;
}

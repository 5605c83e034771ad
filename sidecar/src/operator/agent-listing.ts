import { MAX_AGENTS_PAGE_LIMIT, type AgentView } from '@agentcom/shared';
import { ListingUnstableError } from './errors';
import type { HubClient } from './hub-client';

/**
 * Every agent, in the hub's order (by id), following `nextCursor` page by page: pages of the most
 * agents the hub gives, so that a fleet costs the fewest requests, each reading only its page.
 * The hub's cursor only moves forward (it names the last agent of a page): one sent back again
 * means the listing is not moving on (something between the CLI and the hub answering an old
 * page), so the walk stops rather than loop.
 */
export async function listEveryAgent(client: HubClient): Promise<AgentView[]> {
  const agents: AgentView[] = [];
  const followed = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await client.listAgents({ limit: MAX_AGENTS_PAGE_LIMIT, cursor });
    agents.push(...page.agents);
    cursor = page.nextCursor;
    if (cursor !== undefined && followed.has(cursor)) {
      throw new ListingUnstableError(
        `the hub sent the cursor ${JSON.stringify(cursor)} twice: the agents listing does not move on; run it again`,
      );
    }
    if (cursor !== undefined) followed.add(cursor);
  } while (cursor !== undefined);
  return agents;
}

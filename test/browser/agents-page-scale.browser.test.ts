import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Hub } from '../../hub/src/hub';
import { launchChromium } from '../helpers/browser';
import { TEST_ADMIN_KEY, api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

/** Agents registered (offline: no heartbeat, so no age of theirs ticks) before the page loads. */
const AGENTS = 1000;
const QUEUE = 'scale';
const agentId = (n: number): string => `scale-${String(n).padStart(4, '0')}`;

/** One DOM mutation as the page saw it: where it happened, and which rows it added or removed. */
interface SeenMutation {
  type: string;
  /** The id of the table (or box) it happened in. */
  table: string | null;
  /** The agent whose row it happened in, when in one. */
  agent: string | null;
  added: string[];
  removed: string[];
}

/**
 * Run in the page (plain JavaScript: the tests are type-checked without the DOM's types): records
 * every DOM mutation from now on as a {@link SeenMutation}; `window.takeMutations()` hands over
 * those recorded so far.
 */
const WATCH_MUTATIONS = `(() => {
  const seen = [];
  const name = (node) => (node.dataset && node.dataset.agent) || node.nodeName.toLowerCase();
  const describe = (record) => {
    const target = record.target.nodeType === 1 ? record.target : record.target.parentElement;
    const table = target && target.closest('table, #summary');
    const row = target && target.closest('tr[data-agent]');
    return {
      type: record.type,
      table: table ? table.id : null,
      agent: row ? row.dataset.agent : null,
      added: Array.from(record.addedNodes, name),
      removed: Array.from(record.removedNodes, name),
    };
  };
  const observer = new MutationObserver((records) => seen.push(...records.map(describe)));
  observer.observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  window.takeMutations = () => {
    seen.push(...observer.takeRecords().map(describe));
    return seen.splice(0);
  };
})()`;

describe('agents page with many agents', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const agents: TestAgent[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    for (let n = 0; n < AGENTS; n += 50) {
      const minted = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          api(hub.url, 'POST', '/v1/agents', { agentId: agentId(n + i), queues: [QUEUE] }),
        ),
      );
      expect(minted.map((answer) => answer.status)).toEqual(minted.map(() => 201));
    }
    browser = await launchChromium();
    context = await browser.newContext({
      httpCredentials: { username: 'admin', password: TEST_ADMIN_KEY },
      viewport: { width: 1360, height: 900 },
    });
    page = await context.newPage();
    page.setDefaultTimeout(20_000);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(message.text());
    });
    expect((await page.goto(`${hub.url}/`))?.status()).toBe(200);
    await page.locator('#agent-count', { hasText: String(AGENTS) }).waitFor();
  });
  afterAll(async () => {
    for (const agent of agents.splice(0)) agent.close();
    await context?.close();
    await browser?.close();
    await hub?.close();
    await redis?.dispose();
  });

  /** Records every DOM mutation of the page from now on. */
  const watchMutations = async (): Promise<void> => {
    await page.evaluate(WATCH_MUTATIONS);
  };
  const takeMutations = async (): Promise<SeenMutation[]> =>
    (await page.evaluate('window.takeMutations()')) as SeenMutation[];
  const shownOrder = async (): Promise<string[]> =>
    (await page.evaluate(
      "Array.from(document.querySelectorAll('#agents tbody tr'), (row) => row.dataset.agent)",
    )) as string[];

  it("renders one agent's transition among 1,000 in that agent's row alone", async () => {
    const id = agentId(AGENTS / 2);
    const row = page.locator(`#agents tr[data-agent="${id}"]`);
    await row.locator('.badge', { hasText: /^offline$/ }).waitFor();
    await watchMutations();

    agents.push(await TestAgent.register(hub.url, id, [QUEUE]));
    await row.locator('.badge', { hasText: /^idle$/ }).waitFor();
    await page.locator(`#queues tr[data-queue="${QUEUE}"] td.idle`, { hasText: /^1$/ }).waitFor();

    const mutations = await takeMutations();
    const inAgents = mutations.filter((m) => m.table === 'agents');
    expect(inAgents.length).toBeGreaterThan(0);
    // nothing outside the agent's row: no other row written, none moved or appended again
    expect(inAgents.filter((m) => m.agent !== id)).toEqual([]);
    // and little elsewhere: a transition row, the counts
    expect(mutations.length).toBeLessThan(60);
    expect(pageErrors).toEqual([]);
  });

  it("inserts a new agent's row at its sorted place, moving no other row", async () => {
    const id = `${agentId(AGENTS / 4)}-new`;
    await watchMutations();
    agents.push(await TestAgent.register(hub.url, id, [QUEUE]));
    await page.locator(`#agents tr[data-agent="${id}"] .badge`, { hasText: /^idle$/ }).waitFor();

    const mutations = (await takeMutations()).filter((m) => m.table === 'agents');
    const rowsAddedOrRemoved = mutations.filter((m) => m.added.length + m.removed.length > 0);
    // one row added, in the tbody, and nothing removed
    expect(rowsAddedOrRemoved.filter((m) => m.agent !== id)).toEqual([
      { type: 'childList', table: 'agents', agent: null, added: [id], removed: [] },
    ]);
    expect(mutations.filter((m) => m.agent !== id && m.added.length === 0)).toEqual([]);
    const order = await shownOrder();
    expect(order).toHaveLength(AGENTS + 1);
    expect(order).toEqual([...order].sort());
    expect(order.indexOf(id)).toBe(AGENTS / 4 + 1);
    expect(pageErrors).toEqual([]);
  });
});

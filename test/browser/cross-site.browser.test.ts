import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser } from 'playwright-core';
import type { Hub } from '../../hub/src/hub';
import { launchChromium } from '../helpers/browser';
import { TEST_ADMIN_KEY, api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

/**
 * An operator who opened a dashboard has the admin key cached by the browser as Basic
 * credentials, which the browser sends with every request to the hub: also with a form that a
 * page of another site submits. Such a request must change nothing.
 */
describe('a page of another site, in the browser of an operator who opened a dashboard', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  let browser: Browser;
  let attacker: Server;
  let attackerUrl: string;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    browser = await launchChromium();
    // a form that drains an agent: text/plain needs no preflight, and drain reads no body
    attacker = createServer((request, response) => {
      const agentId = new URL(request.url ?? '/', 'http://x').searchParams.get('agent') ?? '';
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(
        `<!doctype html><form id="f" method="POST" enctype="text/plain" action="${hub.url}/v1/agents/${agentId}/drain"></form>`,
      );
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    // another site: localhost is not 127.0.0.1
    attackerUrl = `http://localhost:${(attacker.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    for (const agent of agents) agent.close();
    await browser.close();
    await new Promise((resolve) => attacker.close(resolve));
    await hub.close();
    await redis.dispose();
  });

  const agentState = async (agentId: string) =>
    (await api<{ state: string }>(hub.url, 'GET', `/v1/agents/${agentId}`)).body.state;

  it('cannot make it change anything with the cached key; the dashboard origin still can', async () => {
    agents.push(await TestAgent.register(hub.url, 'csrf-target'));
    agents.push(await TestAgent.register(hub.url, 'same-origin-target'));
    const context = await browser.newContext();
    try {
      const dashboard = await context.newPage();
      const port = new URL(hub.url).port;
      const opened = await dashboard.goto(`http://admin:${TEST_ADMIN_KEY}@127.0.0.1:${port}/`);
      expect(opened?.status()).toBe(200);

      const evil = await context.newPage();
      await evil.goto(`${attackerUrl}?agent=csrf-target`);
      const [answer] = await Promise.all([
        evil.waitForNavigation(),
        evil.locator('#f').evaluate((form: { submit(): void }) => form.submit()),
      ]);
      expect(answer?.status()).toBe(403);
      expect(JSON.parse((await answer?.text()) ?? '{}')).toMatchObject({
        error: { code: 'E_FORBIDDEN' },
      });
      expect(await agentState('csrf-target')).toBe('idle');

      // the dashboard's own requests (same origin) keep working with the cached key
      await dashboard.goto(`http://127.0.0.1:${port}/`);
      const status = await dashboard.evaluate(async () => {
        const response = await fetch('/v1/agents/same-origin-target/drain', { method: 'POST' });
        return response.status;
      });
      expect(status).toBe(200);
      expect(await agentState('same-origin-target')).toBe('draining');
    } finally {
      await context.close();
    }
  });
});

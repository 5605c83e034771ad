import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Hub } from '../../hub/src/hub';
import { UI_SESSION_TTL_MS, uiSessionKey } from '../../hub/src/ui/ui-session';
import { launchChromium } from '../helpers/browser';
import { TEST_ADMIN_KEY, api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';
import { UiClient, pageSession } from '../helpers/ui-client';

const ARTIFACTS = join(__dirname, '..', 'artifacts');
const bearer = { authorization: `Bearer ${TEST_ADMIN_KEY}` };
const basic = (password: string): Record<string, string> => ({
  authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`,
});

describe('live agents page at /', () => {
  let redis: RedisProcess;
  let hubA: Hub & { url: string };
  let hubB: Hub & { url: string };
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  const agents: TestAgent[] = [];
  const uiClients: UiClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    const prefix = `ui${randomBytes(3).toString('hex')}`;
    hubA = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-a' });
    hubB = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-b' });
  });
  afterAll(async () => {
    for (const client of uiClients.splice(0)) client.close();
    for (const agent of agents.splice(0)) agent.close();
    await context?.close();
    await browser?.close();
    await hubA?.close();
    await hubB?.close();
    await redis?.dispose();
  });

  const newAgentId = (name: string): string => `${name}-${randomBytes(3).toString('hex')}`;
  const register = async (hubUrl: string, agentId: string, queue: string): Promise<TestAgent> => {
    const agent = await TestAgent.register(hubUrl, agentId, [queue]);
    agents.push(agent);
    return agent;
  };
  const createTask = async (hubUrl: string, queue: string): Promise<string> => {
    const created = await api<{ id: string }>(hubUrl, 'POST', '/v1/tasks', {
      queue,
      payload: { from: 'agents page test' },
    });
    expect(created.status).toBe(201);
    return created.body.id;
  };
  const uiClient = (hubUrl: string, auth: Record<string, unknown>): UiClient => {
    const client = new UiClient(hubUrl, auth);
    uiClients.push(client);
    return client;
  };

  describe('without the admin key', () => {
    it('answers 401 with a Basic challenge, so a browser asks for the key', async () => {
      for (const headers of [{}, basic('wrong'), { authorization: 'Bearer wrong' }]) {
        for (const path of ['/', '/ui/socket.io.min.js']) {
          const response = await fetch(`${hubA.url}${path}`, { headers });
          expect(response.status).toBe(401);
          expect(response.headers.get('www-authenticate')).toMatch(/^Basic realm="agentcom"/);
          expect(await response.json()).toMatchObject({ error: { code: 'E_UNAUTHORIZED' } });
        }
      }
    });

    it('refuses a /ui socket without a live session with connect_error E_UNAUTHORIZED', async () => {
      for (const auth of [{}, { session: `uis_${'A'.repeat(43)}` }, { adminKey: 'guess' }]) {
        await expect(uiClient(hubA.url, auth).connected()).rejects.toMatchObject({
          data: { code: 'E_UNAUTHORIZED' },
        });
      }
    });
  });

  describe('with the admin key', () => {
    it('serves the page and its script with a UI session in it, never the admin key', async () => {
      for (const headers of [bearer, basic(TEST_ADMIN_KEY)]) {
        const response = await fetch(`${hubA.url}/`, { headers });
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/^text\/html/);
        expect(response.headers.get('cache-control')).toBe('no-store');
        expect(await response.text()).not.toContain(TEST_ADMIN_KEY);
      }
      const script = await fetch(`${hubA.url}/ui/socket.io.min.js`, { headers: bearer });
      expect(script.status).toBe(200);
      expect(script.headers.get('content-type')).toMatch(/javascript/);
      expect((await script.text()).length).toBeGreaterThan(10_000);
    });

    it('accepts a session minted by one replica on every replica', async () => {
      const session = await pageSession(hubA.url);
      for (const hub of [hubA, hubB]) {
        const client = uiClient(hub.url, { session });
        await client.connected();
        const snapshot = await eventually(() => client.snapshots[0], { what: 'snapshot' });
        expect(snapshot.hubId).toBe(hub.config.hubId);
      }
    });

    it('refreshes a session on each use and refuses it once it expired', async () => {
      const session = await pageSession(hubA.url);
      const key = uiSessionKey(hubA.keys, TEST_ADMIN_KEY, session);
      expect(JSON.parse((await hubA.redis.command.get(key)) ?? '{}')).toMatchObject({
        hub: 'hub-a',
      });
      await hubA.redis.command.pexpire(key, 5000);
      await uiClient(hubB.url, { session }).connected();
      expect(await hubA.redis.command.pttl(key)).toBeGreaterThan(UI_SESSION_TTL_MS - 60_000);

      await hubA.redis.command.del(key);
      await expect(uiClient(hubB.url, { session }).connected()).rejects.toMatchObject({
        data: { code: 'E_UNAUTHORIZED' },
      });
    });

    it('delivers each transition once to the browsers of every replica, whichever replica made it', async () => {
      const session = await pageSession(hubB.url);
      const onA = uiClient(hubA.url, { session });
      const onB = uiClient(hubB.url, { session });
      await Promise.all([onA.connected(), onB.connected()]);
      const queue = `q-${randomBytes(3).toString('hex')}`;
      const agentId = newAgentId('fanout');
      const agent = await register(hubB.url, agentId, queue);
      const assigned = agent.nextAssignment();
      const id = await createTask(hubA.url, queue);
      const msg = await assigned;
      await agent.accept(msg);
      await agent.complete(msg, 'ok');
      const inStream = async (): Promise<string[]> =>
        (await hubA.redis.command.xrange(hubA.keys.events, '-', '+'))
          .filter(([, fields]) => fields[fields.indexOf('agent') + 1] === agentId)
          .map(([entryId]) => entryId);
      expect((await inStream()).length).toBeGreaterThanOrEqual(4);
      for (const [replica, client] of [
        ['hub-a', onA],
        ['hub-b', onB],
      ] as const) {
        // Exactly the stream, in order: a duplicate (one emit per replica) would never match.
        await eventually(
          async () => {
            const stream = await inStream();
            const ids = client.received.filter((e) => e.agent === agentId).map((e) => e.id);
            return ids.length === stream.length && ids.every((x, i) => x === stream[i])
              ? true
              : undefined;
          },
          { what: `each transition of ${agentId} exactly once on ${replica}` },
        );
        const received = client.received.filter((e) => e.agent === agentId);
        expect(received.find((e) => e.reason === 'accept')).toMatchObject({
          from: 'assigned',
          to: 'working',
          task: id,
          hub: 'hub-b',
        });
      }
    });

    describe('in a browser', () => {
      let page: Page;
      const pageErrors: string[] = [];

      beforeAll(async () => {
        browser = await launchChromium();
        context = await browser.newContext({
          httpCredentials: { username: 'admin', password: TEST_ADMIN_KEY },
          viewport: { width: 1360, height: 900 },
        });
        page = await context.newPage();
        page.setDefaultTimeout(15_000);
        page.on('pageerror', (err) => pageErrors.push(err.message));
        page.on('console', (message) => {
          if (message.type() === 'error') pageErrors.push(message.text());
        });
      });

      it('shows an agent of another replica go idle, working with its task, and idle with one task done', async () => {
        const response = await page.goto(`${hubA.url}/`);
        expect(response?.status()).toBe(200);
        await page.locator('#status', { hasText: 'live · replica hub-a' }).waitFor();

        const queue = `q-${randomBytes(3).toString('hex')}`;
        const agentId = newAgentId('pager');
        const agent = await register(hubB.url, agentId, queue);
        const row = page.locator(`#agents tr[data-agent="${agentId}"]`);
        await row.locator('td.state .badge', { hasText: /^idle$/ }).waitFor();
        await row.locator('td.replica', { hasText: /^hub-b$/ }).waitFor();
        await row.locator('td.queues', { hasText: queue }).waitFor();

        const assigned = agent.nextAssignment();
        const id = await createTask(hubA.url, queue);
        const msg = await assigned;
        expect(await agent.accept(msg)).toMatchObject({ ok: true, state: 'working' });
        await row.locator('td.state .badge', { hasText: /^working$/ }).waitFor();
        await row.locator('td.task', { hasText: id }).waitFor();
        await row.locator('td.task-age', { hasText: /^\d+s$/ }).waitFor();
        const working = page.locator(`#agents tr[data-agent="${agentId}"][data-state="working"]`);
        await expect(working.locator('td.state .badge').getAttribute('class')).resolves.toContain(
          'state-working',
        );

        expect(await agent.complete(msg, { ok: true })).toEqual({ ok: true });
        await row.locator('td.state .badge', { hasText: /^idle$/ }).waitFor();
        await row.locator('td.done', { hasText: /^1$/ }).waitFor();
        await row.locator('td.task', { hasText: /^–$/ }).waitFor();

        const accept = page.locator(
          `#events tr[data-agent="${agentId}"][data-reason="accept"][data-task="${id}"]`,
        );
        await accept.waitFor();
        expect(await accept.count()).toBe(1);
        await expect(accept.locator('td.move').textContent()).resolves.toBe('assigned→working');
        await expect(accept.locator('td.replica').textContent()).resolves.toBe('hub-b');
        await page.locator(`#events tr[data-agent="${agentId}"][data-reason="complete"]`).waitFor();
        await page
          .locator(`#queues tr[data-queue="${queue}"] td.idle`, { hasText: /^1$/ })
          .waitFor();
      });

      it('keeps up with other states and saves a screenshot of the page', async () => {
        const queue = `q-${randomBytes(3).toString('hex')}`;
        const busy = await register(hubA.url, newAgentId('busy'), queue);
        const assigned = busy.nextAssignment();
        const taskId = await createTask(hubB.url, queue);
        await busy.accept(await assigned);
        const drained = await register(hubB.url, newAgentId('drained'), queue);
        expect(
          (await api(hubA.url, 'POST', `/v1/agents/${drained.agentId}/drain`)).status,
        ).toBeLessThan(300);
        const offlineId = newAgentId('offline');
        expect((await api(hubA.url, 'POST', '/v1/agents', { agentId: offlineId })).status).toBe(
          201,
        );

        const row = (id: string) => page.locator(`#agents tr[data-agent="${id}"]`);
        await row(busy.agentId).locator('td.task', { hasText: taskId }).waitFor();
        await row(busy.agentId)
          .locator('.badge', { hasText: /^working$/ })
          .waitFor();
        await row(drained.agentId)
          .locator('.badge', { hasText: /^draining$/ })
          .waitFor();
        // registered without a connection: no transition, so it arrives with a snapshot (≤ 10 s)
        await row(offlineId)
          .locator('.badge', { hasText: /^offline$/ })
          .waitFor({ timeout: 20_000 });

        mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: join(ARTIFACTS, 'agents-page.png'), fullPage: true });
        expect(pageErrors).toEqual([]);
      });

      it('shows the ack timeouts an agent let pass in a row, until a resume ends the streak', async () => {
        const queue = `q-${randomBytes(3).toString('hex')}`;
        const silent = await register(hubB.url, newAgentId('silent'), queue);
        const row = page.locator(`#agents tr[data-agent="${silent.agentId}"]`);
        await row.locator('.badge', { hasText: /^idle$/ }).waitFor();
        const id = await createTask(hubA.url, queue);
        // it lets its push pass: an ack timeout later it rests, the page counts the miss
        await row.locator('td.state .badge', { hasText: /^cooldown$/ }).waitFor();
        await row.locator('td.state .missed-acks', { hasText: /^missed acks: 1$/ }).waitFor();

        const pushed = silent.nextAssignment();
        const resumed = await api(hubA.url, 'POST', `/v1/agents/${silent.agentId}/resume`);
        expect(resumed.body).toMatchObject({ state: 'idle' });
        const msg = await pushed;
        expect(msg.task.id).toBe(id);
        expect(await silent.accept(msg)).toMatchObject({ ok: true });
        await row.locator('td.state .badge', { hasText: /^working$/ }).waitFor();
        expect(await row.locator('td.state .missed-acks').count()).toBe(0);
        expect(await silent.complete(msg, 'ok')).toEqual({ ok: true });
        expect(pageErrors).toEqual([]);
      });

      it('says so when its session ended, and is live again after a reload', async () => {
        const boot = JSON.parse((await page.locator('#agentcom-boot').textContent()) ?? '{}') as {
          session: string;
        };
        await hubA.redis.command.del(uiSessionKey(hubA.keys, TEST_ADMIN_KEY, boot.session));
        hubA.io.of('/ui').disconnectSockets(true);
        await page.locator('#status', { hasText: 'session expired' }).waitFor();
        await page.reload();
        await page.locator('#status', { hasText: 'live · replica hub-a' }).waitFor();
        await page.locator('#agents tr[data-agent]').first().waitFor();
      });
    });
  });
});

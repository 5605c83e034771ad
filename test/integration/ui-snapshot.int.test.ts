import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { AgentStore } from '../../hub/src/fsm/agent-store';
import type { Hub } from '../../hub/src/hub';
import { createLogger } from '../../hub/src/logger';
import type { RedisKeys } from '../../hub/src/redis/keys';
import { agentScripts } from '../../hub/src/redis/scripts';
import { registerAgentsPage } from '../../hub/src/ui/agents-page';
import type { UiSnapshot, UiSnapshotRequest } from '../../hub/src/ui/ui-events';
import { commandCalls } from '../helpers/commandstats';
import { TEST_ADMIN_KEY, api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';
import { UiClient, pageSession } from '../helpers/ui-client';

/**
 * A snapshot the tab asks for with `snapshot:get`. A tab may ask once a second, its connect
 * snapshot included: polled until it is its turn (a refused request reads nothing).
 */
function askSnapshot(client: UiClient, request: UiSnapshotRequest): Promise<UiSnapshot> {
  return eventually(
    async () => {
      const reply = (await client.socket.timeout(5000).emitWithAck('snapshot:get', request)) as
        UiSnapshot | { error: string };
      return 'error' in reply ? undefined : reply;
    },
    { what: 'a snapshot:get answered' },
  );
}

describe('agents page snapshot', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  let admin: Redis;
  const agents: TestAgent[] = [];
  const clients: UiClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    admin = new Redis(redis.url);
  });
  afterAll(async () => {
    for (const client of clients.splice(0)) client.close();
    for (const agent of agents.splice(0)) agent.close();
    admin?.disconnect();
    await hub?.close();
    await redis?.dispose();
  });

  it('reads every agent record once, shared with the queue counts; GET /v1/queues reads none', async () => {
    // each connected agent serves a queue of its own (listed only because an agent serves it)
    // and a shared one; offline agents are read too, but serve nothing
    const connected = 6;
    const offline = 4;
    for (let i = 0; i < connected; i++) {
      agents.push(await TestAgent.register(hub.url, `snap-agent-${i}`, ['shared', `own-${i}`]));
    }
    for (let i = 0; i < offline; i++) {
      expect((await api(hub.url, 'POST', '/v1/agents', { agentId: `snap-off-${i}` })).status).toBe(
        201,
      );
    }
    await eventually(
      async () => ((await admin.zcard(hub.keys.idle('shared'))) === connected ? true : undefined),
      { what: 'every connected agent idle' },
    );
    const records = connected + offline;

    const client = new UiClient(hub.url, { session: await pageSession(hub.url) });
    clients.push(client);
    const before = await commandCalls(admin, 'hgetall');
    await client.connected();
    const snapshot = await eventually(() => client.snapshots[0], { what: 'the first snapshot' });
    expect((await commandCalls(admin, 'hgetall')) - before).toBe(records);

    expect(snapshot.agents).toHaveLength(records);
    const zero = { waiting: 0, prioritized: 0, delayed: 0, active: 0, completed: 0, failed: 0 };
    expect(snapshot.queues.shared).toEqual(zero);
    for (let i = 0; i < connected; i++) expect(snapshot.queues[`own-${i}`]).toEqual(zero);

    const beforeList = await commandCalls(admin, 'hgetall');
    const listed = await api<{ queues: Array<{ name: string; idleAgents: number }> }>(
      hub.url,
      'GET',
      '/v1/queues',
    );
    expect((await commandCalls(admin, 'hgetall')) - beforeList).toBe(0);
    expect(listed.body.queues).toContainEqual(
      expect.objectContaining({ name: 'shared', idleAgents: connected, counts: zero }),
    );
    expect(listed.body.queues).toHaveLength(connected + 1);
  });

  it('lists queues named like Object.prototype members, with their counts, whether their agent is connected or not', async () => {
    const names = ['constructor', 'toString', 'plain'];
    const agent = await TestAgent.register(hub.url, 'snap-prototype-names', names);
    agents.push(agent);
    const zero = { waiting: 0, prioritized: 0, delayed: 0, active: 0, completed: 0, failed: 0 };
    const snapshot = async (): Promise<Record<string, unknown>> => {
      const client = new UiClient(hub.url, { session: await pageSession(hub.url) });
      clients.push(client);
      await client.connected();
      // read after the agent's change: the tab's connect snapshot may be one shared from before
      return (await askSnapshot(client, { fresh: true })).queues;
    };
    const connected = await snapshot();
    for (const name of names)
      expect({ name, counts: connected[name] }).toEqual({ name, counts: zero });

    // offline, it serves nothing: its queues are listed without counts
    agent.close();
    await eventually(
      async () => {
        const { body } = await api<{ state: string }>(
          hub.url,
          'GET',
          `/v1/agents/${agent.agentId}`,
        );
        return body.state === 'offline' ? true : undefined;
      },
      { what: 'the agent offline' },
    );
    const offline = await snapshot();
    for (const name of names) expect({ name, counts: offline[name] }).toEqual({ name, counts: {} });
  });

  it("carries an agent's streak of ack timeouts (missedAcks), which the page shows next to its state", async () => {
    const agent = await TestAgent.register(hub.url, 'snap-streak', ['streak']);
    agents.push(agent);
    // the count as the sweeper leaves it (test/integration/ack-timeout.int.test.ts makes real ones)
    await admin.hset(hub.keys.agent(agent.agentId), 'missedAcks', '3');
    const client = new UiClient(hub.url, { session: await pageSession(hub.url) });
    clients.push(client);
    await client.connected();
    // read after the write: the tab's connect snapshot may be one shared from before
    const snapshot = await askSnapshot(client, { fresh: true });
    expect(snapshot.agents.find((view) => view.agentId === agent.agentId)).toMatchObject({
      state: 'idle',
      missedAcks: 3,
    });
  });
});

/**
 * The agents page of a replica of its own on `keys` (the hub's): the real namespace, snapshot
 * reader and tail, with the snapshot shared for `snapshotReuseMs`, so a test can act between a
 * snapshot's read and the tabs it is shared with, whatever the machine's pace.
 */
async function startPageReplica(
  redisUrl: string,
  keys: RedisKeys,
  snapshotReuseMs: number,
): Promise<{ url: string; close(): Promise<void> }> {
  const hubId = 'page-replica';
  const redis = new Redis(redisUrl);
  const app = Fastify();
  const io = new Server(app.server, { transports: ['websocket'], serveClient: false });
  const page = registerAgentsPage({
    app,
    io,
    redis,
    redisProblem: () => undefined,
    keys,
    agents: new AgentStore({ redis, scripts: agentScripts(redis), keys, hubId }),
    adminKey: TEST_ADMIN_KEY,
    hubId,
    logger: createLogger({ level: 'silent', hubId }),
    blockingRedis: () => redis.duplicate(),
    snapshotReuseMs,
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    async close() {
      await page.close();
      await io.close(); // closes app.server too
      redis.disconnect();
    },
  };
}

/** An agent as a tab shows it: the newest version among its snapshots and transitions. */
function shown(client: UiClient, agentId: string): { state: string; version: number } | undefined {
  let newest: { state: string; version: number } | undefined;
  for (const snapshot of client.snapshots) {
    const view = snapshot.agents.find((a) => a.agentId === agentId);
    if (view && (!newest || view.version > newest.version))
      newest = { state: view.state, version: view.version };
  }
  for (const t of client.received) {
    if (t.agent === agentId && (!newest || t.version > newest.version))
      newest = { state: t.to, version: t.version };
  }
  return newest;
}

function versionIn(snapshot: UiSnapshot, agentId: string): number | undefined {
  return snapshot.agents.find((a) => a.agentId === agentId)?.version;
}

describe('agents page snapshot, shared between the tabs of a replica', () => {
  const tabCount = 8;
  const offlineCount = 300;
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  let admin: Redis;
  let page: { url: string; close(): Promise<void> };
  let records = 0;
  const agents: TestAgent[] = [];
  const clients: UiClient[] = [];

  const readsOfRecords = (): Promise<number> => commandCalls(admin, 'hgetall');
  /** Opens `count` tabs at once (their sessions minted first) and waits for their snapshots. */
  const openTabs = async (
    url: string,
    count: number,
  ): Promise<Array<{ tab: UiClient; snapshot: UiSnapshot }>> => {
    const sessions = await Promise.all(Array.from({ length: count }, () => pageSession(url)));
    const tabs = sessions.map((session) => new UiClient(url, { session }));
    clients.push(...tabs);
    await Promise.all(tabs.map((tab) => tab.connected()));
    return Promise.all(
      tabs.map(async (tab) => ({
        tab,
        snapshot: await eventually(() => tab.snapshots[0], { what: "a tab's first snapshot" }),
      })),
    );
  };
  /** An operator's drain, or its resume. */
  const setDrained = async (agentId: string, drained: boolean): Promise<void> => {
    const { status } = await api(
      hub.url,
      'POST',
      `/v1/agents/${agentId}/${drained ? 'drain' : 'resume'}`,
    );
    expect(status).toBe(200);
  };

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
    admin = new Redis(redis.url);
    page = await startPageReplica(redis.url, hub.keys, 60_000);
    for (const id of ['share-mover', 'share-asker'])
      agents.push(await TestAgent.register(hub.url, id, ['share']));
    for (let first = 0; first < offlineCount; first += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const { status } = await api(hub.url, 'POST', '/v1/agents', {
            agentId: `share-off-${first + i}`,
          });
          expect(status).toBe(201);
        }),
      );
    }
    await eventually(
      async () => ((await admin.zcard(hub.keys.idle('share'))) === 2 ? true : undefined),
      { what: 'both connected agents idle' },
    );
    records = agents.length + offlineCount;
  });
  afterAll(async () => {
    for (const client of clients.splice(0)) client.close();
    for (const agent of agents.splice(0)) agent.close();
    await page?.close();
    admin?.disconnect();
    await hub?.close();
    await redis?.dispose();
  });

  it(`${tabCount} tabs opened at once cost one read of the agent records, not one each`, async () => {
    const before = await readsOfRecords();
    const opened = await openTabs(hub.url, tabCount);
    expect((await readsOfRecords()) - before).toBe(records);
    for (const { snapshot } of opened) {
      expect(snapshot.agents).toHaveLength(records);
      expect(snapshot.agents.find((a) => a.agentId === 'share-mover')?.state).toBe('idle');
      expect(snapshot.agents.find((a) => a.agentId === 'share-off-0')?.state).toBe('offline');
    }
  });

  it('tabs opened after a transition get the snapshot read before it, and the transition with it', async () => {
    const mover = 'share-mover';
    const [first] = await openTabs(page.url, 1);
    const sharedVersion = versionIn(first!.snapshot, mover)!;
    // made after the read: the shared snapshot cannot show it
    await setDrained(mover, true);
    const drained = await first!.tab.transition(
      (t) => t.agent === mover && t.to === 'draining',
      'the drain, live',
    );

    const before = await readsOfRecords();
    const openedAt = Date.now();
    const late = await openTabs(page.url, tabCount - 1);
    expect((await readsOfRecords()) - before).toBe(0);
    for (const { tab, snapshot } of late) {
      expect(versionIn(snapshot, mover)).toBe(sharedVersion); // the shared read, from before
      expect(snapshot.serverTime).toBeGreaterThanOrEqual(openedAt); // its clock when sent
      // the drain went out before the tab joined: it comes with the snapshot
      await tab.transition((t) => t.id === drained.id, 'the drain, sent with the snapshot');
      expect(shown(tab, mover)).toEqual({ state: 'draining', version: drained.version });
    }
    await setDrained(mover, false);
  });

  it('snapshot:get answers with the shared snapshot, and with one read after the request when asked fresh', async () => {
    const asker = 'share-asker';
    const [{ tab }] = (await openTabs(page.url, 1)) as [{ tab: UiClient; snapshot: UiSnapshot }];
    await setDrained(asker, true);
    const drained = await tab.transition((t) => t.agent === asker && t.to === 'draining', 'drain');

    let before = await readsOfRecords();
    const plain = await askSnapshot(tab, {});
    expect((await readsOfRecords()) - before).toBe(0);
    expect(versionIn(plain, asker)).toBeLessThan(drained.version);

    before = await readsOfRecords();
    const fresh = await askSnapshot(tab, { fresh: true });
    expect((await readsOfRecords()) - before).toBe(records);
    expect(versionIn(fresh, asker)).toBe(drained.version);
    await setDrained(asker, false);
  });
});

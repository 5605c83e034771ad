import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { commandCalls } from '../helpers/commandstats';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';
import { UiClient, pageSession } from '../helpers/ui-client';

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

  it('reads every agent record once, shared with the queue counts; GET /v1/queues still reads them itself', async () => {
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
    expect((await commandCalls(admin, 'hgetall')) - beforeList).toBe(records);
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
      return (await eventually(() => client.snapshots[0], { what: 'a snapshot' })).queues;
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
    const snapshot = await eventually(() => client.snapshots[0], { what: 'the first snapshot' });
    expect(snapshot.agents.find((view) => view.agentId === agent.agentId)).toMatchObject({
      state: 'idle',
      missedAcks: 3,
    });
  });
});

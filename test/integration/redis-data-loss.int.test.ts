import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { RedisKeys } from '../../hub/src/redis/keys';
import { luaScript } from '../../hub/src/redis/scripts';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

/**
 * Redis loses its data (restarted without persistence, failed over to an empty replica, flushed)
 * while agents keep their connections: their records, token hashes and idle indexes are gone.
 */
describe('agents connected while Redis restarts empty', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  let agent: TestAgent | undefined;

  beforeEach(async () => {
    redis = await startRedis({ appendonly: false });
    hub = await startTestHub(redis.url);
  });
  afterEach(async () => {
    agent?.close();
    await hub.close();
    await redis.dispose();
  });

  it('records a connected agent again at its next heartbeat, keeps its connection and hands it tasks', async () => {
    agent = await TestAgent.register(hub.url, 'survivor');
    await eventually(
      async () => {
        const { body } = await api<{ state: string }>(hub.url, 'GET', '/v1/agents/survivor');
        return body.state === 'idle' ? true : undefined;
      },
      { what: 'the agent idle' },
    );
    let dropped = false;
    agent.socket.on('disconnect', () => (dropped = true));
    await redis.stop('SIGKILL');
    await redis.restart();
    await eventually(() => (hub.redis.command.status === 'ready' ? true : undefined), {
      what: 'the hub reconnected to the empty Redis',
    });
    expect(await api(hub.url, 'GET', '/v1/agents/survivor')).toMatchObject({ status: 404 });

    const connected = agent;
    await eventually(
      async () => {
        const ack = await connected.send('agent:heartbeat', {});
        return ack.ok && ack.state === 'idle' ? true : undefined;
      },
      { what: 'the agent recorded idle again' },
    );
    expect(dropped).toBe(false);
    const { body } = await api<{ state: string; queues: string[] }>(
      hub.url,
      'GET',
      '/v1/agents/survivor',
    );
    expect(body).toMatchObject({ state: 'idle', queues: ['default'] });
    // in the id index too, which the agents listing pages through
    const keys = new RedisKeys(hub.config.prefix);
    expect(await hub.redis.command.zscore(keys.agentsById, 'survivor')).toBe('0');

    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { payload: { n: 1 } });
    const msg = await assigned;
    expect(msg.task.id).toBe(created.body.id);
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
    expect(dropped).toBe(false);
  });

  it('never writes over a record that exists (a revoked agent keeps no token)', async () => {
    const keys = new RedisKeys(hub.config.prefix);
    const client = new Redis(redis.url);
    try {
      await api(hub.url, 'POST', '/v1/agents', { agentId: 'revoked' });
      await api(hub.url, 'DELETE', '/v1/agents/revoked');
      const restore = luaScript('restoreAgent');
      const args = ['revoked', 'a'.repeat(64), 'default'];
      const scriptKeys = [keys.agent('revoked'), keys.agents, keys.agentsById];
      expect(await restore.run(client, scriptKeys, args)).toBe(0);
      expect(await client.hget(keys.agent('revoked'), 'tokenHash')).toBeNull();
    } finally {
      client.disconnect();
    }
  });
});

describe('queue names after Redis restarts empty', () => {
  let redis: RedisProcess;
  const hubs: Array<Hub & { url: string }> = [];
  let agent: TestAgent | undefined;

  beforeEach(async () => {
    redis = await startRedis({ appendonly: false });
  });
  afterEach(async () => {
    agent?.close();
    for (const hub of hubs.splice(0)) await hub.close();
    await redis.dispose();
  });

  it('are recorded again by the replica that has them open: a replica started later, GET /v1/queues and task look-ups find them', async () => {
    const first = await startTestHub(redis.url);
    hubs.push(first);
    // the replica opens `jobs` (a task added) and an agent serves it
    await api(first.url, 'POST', '/v1/tasks', { queue: 'jobs', payload: { before: true } });
    agent = await TestAgent.register(first.url, 'worker', ['jobs']);
    await redis.stop('SIGKILL');
    await redis.restart();
    await eventually(() => (first.redis.command.status === 'ready' ? true : undefined), {
      what: 'the replica reconnected to the empty Redis',
    });
    // added through the replica whose `jobs` queue was open before Redis lost its data
    const created = await api<{ id: string }>(first.url, 'POST', '/v1/tasks', {
      queue: 'jobs',
      payload: { after: true },
    });
    expect(created.status).toBe(201);
    const second = await startTestHub(redis.url, { AGENTCOM_PREFIX: first.config.prefix });
    hubs.push(second);
    for (const hub of [first, second]) {
      await eventually(
        async () => {
          const { body } = await api<{ queues: Array<{ name: string; counts: object }> }>(
            hub.url,
            'GET',
            '/v1/queues',
          );
          const jobs = body.queues.find((q) => q.name === 'jobs');
          return jobs && Object.values(jobs.counts).some((n) => n > 0) ? true : undefined;
        },
        {
          what: `GET /v1/queues on ${hub.config.hubId} counting the task of jobs`,
          timeoutMs: 10_000,
        },
      );
      expect(await api(hub.url, 'GET', `/v1/tasks/${created.body.id}`)).toMatchObject({
        status: 200,
        body: { id: created.body.id },
      });
      const listed = await api<{ tasks: Array<{ id: string }> }>(hub.url, 'GET', '/v1/tasks');
      expect(listed.body.tasks.map((t) => t.id)).toContain(created.body.id);
    }
  });
});

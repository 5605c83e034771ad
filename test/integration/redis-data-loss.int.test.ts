import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { RedisKeys } from '../../hub/src/redis/keys';
import { LuaScript } from '../../hub/src/redis/script-command';
import { scriptSource } from '../../hub/src/redis/scripts';
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
      const restore = new LuaScript('restoreAgent', scriptSource('restoreAgent'));
      const args = ['revoked', 'a'.repeat(64), 'default'];
      expect(await restore.run(client, [keys.agent('revoked'), keys.agents], args)).toBe(0);
      expect(await client.hget(keys.agent('revoked'), 'tokenHash')).toBeNull();
    } finally {
      client.disconnect();
    }
  });
});

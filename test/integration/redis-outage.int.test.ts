import type { Hub } from '../../hub/src/hub';
import { TEST_ADMIN_KEY, api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** How long a request may take to be answered while Redis is down (it used to wait for Redis). */
const ANSWER_BOUND_MS = 3000;

describe('the API while Redis is down', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };

  beforeAll(async () => {
    redis = await startRedis({ appendonly: true });
    hub = await startTestHub(redis.url);
  });
  afterAll(async () => {
    await hub.close();
    await redis.dispose();
  });

  const bounded = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`${hub.url}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${TEST_ADMIN_KEY}`, 'content-type': 'application/json' },
      signal: AbortSignal.timeout(ANSWER_BOUND_MS),
    });

  it('answers 503 at once, and a task refused then is never created when Redis is back', async () => {
    const document = (await (await fetch(`${hub.url}/docs/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    await redis.stop('SIGKILL');
    try {
      await eventually(() => (hub.redis.command.status !== 'ready' ? true : undefined), {
        what: 'the hub saw Redis go',
      });
      const created = await bounded('/v1/tasks', {
        method: 'POST',
        body: JSON.stringify({ payload: { during: 'outage' } }),
      });
      expect(created.status).toBe(503);
      expect(await created.json()).toMatchObject({ error: { code: 'E_UNAVAILABLE' } });
      expect((await bounded('/v1/tasks')).status).toBe(503);
      // and the API's document declares it
      for (const method of ['post', 'get']) {
        const declared = document.paths['/v1/tasks']?.[method]?.responses['503'];
        expect(JSON.stringify(declared)).toContain('E_UNAVAILABLE');
      }
      // the replica's own metrics still answer (they need no Redis)
      expect((await bounded('/metrics')).status).toBe(200);
    } finally {
      await redis.restart();
    }
    await eventually(async () => ((await bounded('/readyz')).status === 200 ? true : undefined), {
      what: 'ready again',
    });
    const listed = await api<{ tasks: unknown[] }>(hub.url, 'GET', '/v1/tasks');
    expect(listed).toMatchObject({ status: 200, body: { tasks: [] } });
  });
});

import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import type { RedisProcess } from '../helpers/redis-server';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/** How long a request may take to be answered while Redis is down (it used to wait for Redis). */
const ANSWER_BOUND_MS = 3000;
const AUTH = `Authorization: Bearer ${TEST_ADMIN_KEY}\r\n`;

/** A raw connection to `hub` that sends `head` and collects what the replica answers. */
function rawRequest(
  hub: { port: number },
  head: string,
): { socket: Socket; received: () => string } {
  const socket = connect(hub.port, '127.0.0.1');
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  socket.on('error', () => undefined);
  socket.write(head);
  return { socket, received: () => text };
}

/** The replica's `HTTP_REQUEST_TIMEOUT_MS` here (30 s by default). */
const REQUEST_TIMEOUT_MS = 3000;

describe('HTTP edge: a request that never arrives whole', () => {
  const fixture = useTestHub({ env: { HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS) } });
  let hub: TestHub;
  beforeAll(() => ({ hub } = fixture));

  it(
    'closes a connection whose body stalls or trickles within the request timeout, with or without the key; websockets stay',
    async () => {
      const agent = await TestAgent.register(hub.url, 'edge-agent');
      const stalled = rawRequest(
        hub,
        `POST /v1/tasks HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{`,
      );
      const trickled = rawRequest(
        hub,
        'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{',
      );
      // a byte every 200 ms: the connection is never idle, and answered 401 at once, body unread
      const trickle = setInterval(() => trickled.socket.write(' '), 200);
      const expecting = rawRequest(
        hub,
        `POST /v1/tasks HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n`,
      );
      const startedAt = Date.now();
      try {
        const closed = (socket: Socket, what: string) =>
          withTimeout(once(socket, 'close'), REQUEST_TIMEOUT_MS + 5000, what);
        await Promise.all([
          closed(stalled.socket, 'the stalled body closed'),
          closed(trickled.socket, 'the trickled body closed'),
          closed(expecting.socket, 'the stalled 100-continue closed'),
        ]);
        expect(Date.now() - startedAt).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 1000);
        expect(stalled.received()).toMatch(/^HTTP\/1\.1 400 /);
        expect(stalled.received()).toContain('"E_VALIDATION"');
        expect(trickled.received()).toMatch(/^HTTP\/1\.1 401 /);
        // an upgraded connection is no request in progress: it outlives the timeout
        expect(agent.socket.connected).toBe(true);
        expect((await api(hub.url, 'GET', '/v1/agents/edge-agent')).status).toBe(200);
      } finally {
        clearInterval(trickle);
        for (const { socket } of [stalled, trickled, expecting]) socket.destroy();
        agent.close();
      }
    },
    REQUEST_TIMEOUT_MS + 30_000,
  );
});

describe('HTTP edge: the Redis gate while Redis is down', () => {
  const fixture = useTestHub();
  let redis: RedisProcess;
  let hub: TestHub;
  beforeAll(() => ({ redis, hub } = fixture));

  /** A request with the admin key (as Bull Board's page sends it) that gives up after {@link ANSWER_BOUND_MS}. */
  const bounded = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`${hub.url}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${TEST_ADMIN_KEY}`,
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      signal: AbortSignal.timeout(ANSWER_BOUND_MS),
    });

  /** Stops Redis, runs `during`, starts Redis again (empty) and waits for the replica to be ready. */
  async function duringOutage(during: () => Promise<void>): Promise<void> {
    await redis.stop('SIGKILL');
    try {
      await eventually(() => (hub.redis.command.status !== 'ready' ? true : undefined), {
        what: 'the hub saw Redis go',
      });
      await during();
    } finally {
      await redis.restart();
    }
    await eventually(async () => ((await bounded('/readyz')).status === 200 ? true : undefined), {
      what: 'ready again',
    });
  }

  it('answers a Bull Board API request 503 at once, and a pause clicked then is never applied', async () => {
    expect(
      (await api(hub.url, 'POST', '/v1/tasks', { payload: { before: 'outage' } })).status,
    ).toBe(201);
    await eventually(
      async () => {
        const response = await bounded('/admin/queues/api/queues');
        const body = (await response.json()) as { queues: { name: string }[] };
        return body.queues.some((queue) => queue.name === 'default') ? true : undefined;
      },
      { what: 'Bull Board shows the queue' },
    );
    await duringOutage(async () => {
      const paused = await bounded('/admin/queues/api/queues/default/pause', { method: 'PUT' });
      expect(paused.status).toBe(503);
      expect(await paused.json()).toMatchObject({ error: { code: 'E_UNAVAILABLE' } });
      const listed = await bounded('/admin/queues/api/queues');
      expect(listed.status).toBe(503);
      await listed.arrayBuffer();
      // the page itself needs no Redis
      const page = await bounded('/admin/queues');
      expect(page.status).toBe(200);
      await page.arrayBuffer();
    });
    // Redis came back empty: the queue is there again with the next task, and not paused
    expect((await api(hub.url, 'POST', '/v1/tasks', { payload: { after: 'outage' } })).status).toBe(
      201,
    );
    const queues = (await (await bounded('/admin/queues/api/queues')).json()) as {
      queues: { name: string; isPaused: boolean }[];
    };
    expect(queues.queues.find((queue) => queue.name === 'default')).toMatchObject({
      isPaused: false,
    });
  });

  it('answers an API route reached through a percent-encoded or absolute URL 503 at once, and creates nothing', async () => {
    await duringOutage(async () => {
      const created = await bounded('/v%31/tasks', {
        method: 'POST',
        body: JSON.stringify({ payload: { encoded: 'during outage' } }),
      });
      expect(created.status).toBe(503);
      expect(await created.json()).toMatchObject({ error: { code: 'E_UNAVAILABLE' } });
      const absolute = rawRequest(
        hub,
        `GET http://x/%761/queues HTTP/1.1\r\nHost: x\r\n${AUTH}Connection: close\r\n\r\n`,
      );
      await withTimeout(
        once(absolute.socket, 'close'),
        ANSWER_BOUND_MS,
        'the absolute-form answer',
      );
      expect(absolute.received()).toMatch(/^HTTP\/1\.1 503 /);
      expect(absolute.received()).toContain('"E_UNAVAILABLE"');
    });
    const listed = await api<{ tasks: { payload: unknown }[] }>(hub.url, 'GET', '/v1/tasks');
    expect(listed.status).toBe(200);
    expect(listed.body.tasks).toEqual([]);
  });
});

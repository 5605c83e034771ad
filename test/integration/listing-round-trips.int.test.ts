import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { TaskView } from '@agentcom/shared';
import type { Hub } from '../../hub/src/hub';
import { api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** How far Redis is, each way: a network away (a managed Redis, another zone). */
const ONE_WAY_MS = 5;

/**
 * A TCP relay to Redis that delivers every chunk `ONE_WAY_MS` late, in order, and counts the
 * round trips made through it: a client's writes after a reply reached it start one (what a
 * client writes before any reply, however many commands, is one).
 */
async function startFarRedis(redisPort: number) {
  let roundTrips = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: redisPort });
    sockets.add(client).add(upstream);
    let replied = true;
    const late = (to: Socket, chunk: Buffer, then?: () => void) =>
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk);
        then?.();
      }, ONE_WAY_MS);
    client.on('data', (chunk) => {
      if (replied) roundTrips++;
      replied = false;
      late(upstream, chunk);
    });
    upstream.on('data', (chunk) => late(client, chunk, () => (replied = true)));
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      a.on('close', () => b.destroy());
      a.on('error', () => b.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as { port: number }).port}`,
    roundTrips: () => roundTrips,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A page of `GET /v1/tasks` reads its tasks in a bounded number of round trips, not a few per
 * task one after another (a page of 500 tasks cost over 700: 7 s with Redis 5 ms away).
 */
describe('a page of the task listing with Redis a network away', () => {
  let redis: RedisProcess;
  let far: Awaited<ReturnType<typeof startFarRedis>>;
  let hub: Hub & { url: string };
  beforeAll(async () => {
    redis = await startRedis();
    far = await startFarRedis(redis.port);
    hub = await startTestHub(far.url);
  });
  afterAll(async () => {
    await hub.close();
    await far.close();
    await redis.dispose();
  });

  it('lists 500 tasks in a bounded number of round trips', async () => {
    const tasks = Array.from({ length: 500 }, (_, payload) => ({ queue: 'far', payload }));
    expect((await api(hub.url, 'POST', '/v1/tasks/batch', { tasks })).status).toBe(201);
    const before = far.roundTrips();
    const page = await api<{ tasks: TaskView[] }>(
      hub.url,
      'GET',
      '/v1/tasks?queue=far&state=waiting&limit=500',
    );
    // the page's own are fewer than 20; the replica's timers (sweeps, liveness) add a few
    const roundTrips = far.roundTrips() - before;
    expect(page.status).toBe(200);
    expect(page.body.tasks.map((task) => task.payload)).toEqual(tasks.map((t) => t.payload));
    expect(roundTrips).toBeLessThan(100);
  });
});

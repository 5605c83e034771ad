import { randomBytes } from 'node:crypto';
import type { TaskView } from '@agentcom/shared';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { MAX_SCANNED_PER_PAGE } from '../../hub/src/tasks/task-listing';
import { api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

type Page = { tasks: TaskView[]; nextCursor?: string };
const b64 = (text: string): string => Buffer.from(text).toString('base64url');

/** Task listing, retry and logs at their edges (races, removed jobs, crafted cursors). */
describe('task views at their edges', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  const agents: TestAgent[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
  });
  afterEach(() => {
    for (const agent of agents.splice(0)) agent.close();
  });
  afterAll(async () => {
    await hub.close();
    await redis.dispose();
  });

  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const create = async (queue: string, payload: unknown = {}) =>
    (await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { queue, payload, attempts: 1 })).body
      .id;
  /** Walks every page of a listing; the pages, in order. */
  const walk = async (query: string, between?: (page: number) => Promise<void>) => {
    const pages: Page[] = [];
    let cursor: string | undefined;
    do {
      await between?.(pages.length);
      const response = await api<Page>(
        hub.url,
        'GET',
        `/v1/tasks?${query}${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(response.status).toBe(200);
      pages.push(response.body);
      cursor = response.body.nextCursor;
    } while (cursor && pages.length < 50);
    return pages;
  };

  it('answers two retries of one failed task at once with 200 and 409, never 500; the task runs again once', async () => {
    const queue = newQueue();
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    for (let round = 0; round < 5; round++) {
      const assigned = agent.nextAssignment();
      const id = await create(queue);
      const msg = await assigned;
      await agent.accept(msg);
      expect(
        await agent.send('task:fail', {
          taskId: id,
          token: msg.token,
          error: 'x',
          retryable: false,
        }),
      ).toEqual({ ok: true });
      const again = agent.nextAssignment();
      const answers = await Promise.all([
        api<{ error?: { code: string } }>(hub.url, 'POST', `/v1/tasks/${id}/retry`),
        api<{ error?: { code: string } }>(hub.url, 'POST', `/v1/tasks/${id}/retry`),
      ]);
      expect(answers.map((a) => a.status).sort()).toEqual([200, 409]);
      expect(answers.find((a) => a.status === 409)?.body.error?.code).toBe('E_INVALID_STATE');
      const rerun = await again;
      expect(rerun.task.id).toBe(id);
      await agent.accept(rerun);
      expect(await agent.complete(rerun, round)).toEqual({ ok: true });
    }
  });

  it('refuses a crafted cursor with E_VALIDATION, an offset past any list included', async () => {
    const queue = newQueue();
    await create(queue);
    for (const cursor of [
      b64('{"q":"a","t":"failed","o":1e20}'),
      b64('{"q":"a","t":"failed","o":-1}'),
      b64('{"q":"a","t":"nope","o":0}'),
      b64('{"q":1,"t":"failed","o":0}'),
      b64('{"p":0,"o":0}'),
      b64('null'),
    ]) {
      const response = await api<{ error: { code: string } }>(
        hub.url,
        'GET',
        `/v1/tasks?queue=${queue}&state=failed&cursor=${cursor}`,
      );
      expect({ cursor, status: response.status, code: response.body.error?.code }).toEqual({
        cursor,
        status: 400,
        code: 'E_VALIDATION',
      });
    }
  });

  it('reads at most a bounded number of jobs per page, and the walk still reaches every task', async () => {
    // failed tasks, of which the last one only is cancelled: `state=cancelled` drops the rest
    const queue = newQueue();
    const count = MAX_SCANNED_PER_PAGE + 20;
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const bull = new Queue(queue, { connection, prefix: hub.keys.bullPrefix });
    const worker = new Worker(
      queue,
      () => Promise.reject(new UnrecoverableError('failed on purpose')),
      { connection, prefix: hub.keys.bullPrefix, concurrency: 50 },
    );
    try {
      let failed = 0;
      const allFailed = new Promise<void>((resolve) =>
        worker.on('failed', () => {
          if (++failed === count) resolve();
        }),
      );
      await bull.addBulk(
        Array.from({ length: count }, (_, i) => ({
          name: 'task',
          data: { payload: i },
          opts: { jobId: `t${String(i).padStart(4, '0')}` },
        })),
      );
      await allFailed;
    } finally {
      await worker.close();
      await bull.close();
      connection.disconnect();
    }
    await create(queue); // a task through the API: the hub knows the queue from now on
    const pages = await walk(`queue=${queue}&state=failed&limit=500`);
    expect(pages.flatMap((p) => p.tasks)).toHaveLength(count);
    const cancelled = await walk(`queue=${queue}&state=cancelled&limit=1`);
    // the first page stopped after its budget with nothing to show, and said where to go on
    expect(cancelled[0]).toEqual({ tasks: [], nextCursor: expect.any(String) });
    expect(cancelled.length).toBeGreaterThanOrEqual(2);
    expect(cancelled.flatMap((p) => p.tasks)).toEqual([]);
  });

  it('repeats no task when a queue is created between pages', async () => {
    const own = await startTestHub(redis.url);
    try {
      const ids: string[] = [];
      for (const queue of ['m', 'm', 'z', 'z', 'z']) {
        const created = await api<{ id: string }>(own.url, 'POST', '/v1/tasks', {
          queue,
          payload: {},
        });
        ids.push(created.body.id);
      }
      const listed: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 10; page++) {
        // a queue that sorts before every other one appears after the first page
        if (page === 1) await api(own.url, 'POST', '/v1/tasks', { queue: 'a', payload: {} });
        const response = await api<Page>(
          own.url,
          'GET',
          `/v1/tasks?state=waiting&limit=3${cursor ? `&cursor=${cursor}` : ''}`,
        );
        listed.push(...response.body.tasks.map((t) => t.id));
        cursor = response.body.nextCursor;
        if (!cursor) break;
      }
      expect(listed).toEqual(ids);
    } finally {
      await own.close();
    }
  });

  it('shows a job removed after it was read as gone, not as waiting', async () => {
    const id = await create(newQueue());
    const job = await hub.tasks.findJob(id);
    expect(job).toBeDefined();
    await job!.remove();
    expect(await hub.tasks.view(job!)).toBeUndefined();
    expect((await api(hub.url, 'GET', `/v1/tasks/${id}`)).status).toBe(404);
  });

  it('answers the logs of a task cancelled before it ran: none', async () => {
    const id = await create(newQueue());
    expect((await api(hub.url, 'POST', `/v1/tasks/${id}/cancel`)).status).toBe(200);
    expect(await api(hub.url, 'GET', `/v1/tasks/${id}/logs`)).toEqual({
      status: 200,
      body: { logs: [], count: 0 },
    });
  });
});

import { randomBytes } from 'node:crypto';
import {
  MAX_LOG_LINES,
  MAX_QUEUE_NAME_LENGTH,
  MAX_TASK_ID_LENGTH,
  MAX_TASK_LOG_LINES,
  type TaskView,
} from '@agentcom/shared';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { MAX_SCANNED_PER_PAGE } from '../../hub/src/tasks/task-listing';
import { commandCalls } from '../helpers/commandstats';
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
  /** Walks every page of a listing; the pages, in order. `between` runs before each request. */
  const walk = async (query: string, between?: (pages: Page[]) => Promise<void>) => {
    const pages: Page[] = [];
    let cursor: string | undefined;
    do {
      await between?.(pages);
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
      expect(await agent.fail(msg, { error: 'x', retryable: false })).toEqual({ ok: true });
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

  it('refuses a crafted cursor with E_VALIDATION, offsets of the former format included', async () => {
    const queue = newQueue();
    await create(queue);
    for (const cursor of [
      b64('{"q":"a","t":"failed","o":1e20}'),
      b64('{"q":"a","t":"failed","o":0}'),
      b64('{"q":"a","t":"nope"}'),
      b64('{"q":1,"t":"failed"}'),
      b64('{"q":"a","t":"failed","a":"x","s":1e400}'),
      b64('{"q":"a","t":"failed","a":"x","s":"1"}'),
      b64('{"q":"a","t":"failed","a":"x"}'),
      b64('{"q":"a","t":"failed","a":"x","n":"y"}'),
      b64('{"q":"a","t":"failed","a":"","s":1}'),
      b64('{"q":"a","t":"failed","s":1}'),
      b64('{"q":"a","t":"wait","a":"x","n":"y"}'),
      b64('{"q":"a","t":"wait","a":"x","as":"0:0","n":"y"}'),
      b64('{"q":"a","t":"wait","a":"x","as":"0:0","n":"y","ns":"1e3:0"}'),
      b64('{"q":"a","t":"wait","a":"x","as":0,"n":"y","ns":"0:0"}'),
      b64('{"q":"a","t":"wait","a":"x","as":"0:0","n":"","ns":"0:0"}'),
      b64('{"q":"a","t":"wait","a":["x"],"as":"0:0","n":"y","ns":"0:0"}'),
      b64('{"q":"a","t":"wait","a":"x","as":"0:0","n":"y","ns":"0:0","s":1}'),
      b64('{"q":"a","t":"failed","a":"x","as":"0:0","n":"y","ns":"0:0"}'),
      b64('{"q":"a","t":"failed","__proto__":{"a":"x","s":1}}'),
      // a job named by a digest: [prefix, SHA-1 (40 hex digits), length in bytes]
      b64(`{"q":"a","t":"failed","a":["x","${'0'.repeat(40)}"],"s":1}`),
      b64(`{"q":"a","t":"failed","a":["x","${'0'.repeat(40)}",0],"s":1}`),
      b64(`{"q":"a","t":"failed","a":["x","${'0'.repeat(40)}",1.5],"s":1}`),
      b64(`{"q":"a","t":"failed","a":["x","${'0'.repeat(40)}","9"],"s":1}`),
      b64(`{"q":"a","t":"failed","a":["x","${'0'.repeat(39)}",9],"s":1}`),
      b64(`{"q":"a","t":"failed","a":["x","${'G'.repeat(40)}",9],"s":1}`),
      b64(`{"q":"a","t":"failed","a":[1,"${'0'.repeat(40)}",9],"s":1}`),
      b64(`{"q":"a","t":"failed","a":["x","${'0'.repeat(40)}",9,1],"s":1}`),
      b64(`{"q":"a","t":"wait","a":"x","as":"0:0","n":["y","${'0'.repeat(40)}",-1],"ns":"0:0"}`),
      b64('{"p":0,"o":0}'),
      b64('[]'),
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

  it('answers a well-formed cursor naming jobs or scores that never were with a page, not an error', async () => {
    const queue = newQueue();
    const id = await create(queue);
    for (const [state, cursor, listed] of [
      ['waiting', { q: queue, t: 'wait', a: 'none', as: '0:0', n: 'none', ns: '1:2' }, [id]],
      ['failed', { q: queue, t: 'failed', a: 'none', s: -1e308 }, []],
      ['failed', { q: queue, t: 'failed', a: 'z'.repeat(128), s: 1.5e300 }, []],
      ['waiting', { q: '', t: 'wait' }, [id]],
      [
        'waiting',
        { q: queue, t: 'wait', a: ['x', 'f'.repeat(40), 200], as: '0:0', n: 'y', ns: '0:0' },
        [id],
      ],
      ['failed', { q: queue, t: 'failed', a: ['', '0'.repeat(40), 1], s: 0 }, []],
    ] as const) {
      const response = await api<Page>(
        hub.url,
        'GET',
        `/v1/tasks?queue=${queue}&state=${state}&cursor=${b64(JSON.stringify(cursor))}`,
      );
      expect(response.status).toBe(200);
      expect(response.body.tasks.map((t) => t.id)).toEqual(listed);
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

  it('walks every page of jobs an outside BullMQ producer added with long ids, in a long-named queue', async () => {
    // a cursor in a list names two job ids: at their longest, and of characters JSON escapes
    const queue = `${newQueue()}-`.padEnd(MAX_QUEUE_NAME_LENGTH, 'q');
    const first = await create(queue); // a task through the API: the hub knows the queue
    const ids = [
      ...['a', 'b', 'c'].map((c) => c.repeat(MAX_TASK_ID_LENGTH)),
      'é'.repeat(MAX_TASK_ID_LENGTH),
      '\u0001'.repeat(MAX_TASK_ID_LENGTH),
      `x${'"\\'.repeat(MAX_TASK_ID_LENGTH / 2 - 1)}y`,
      // longer than a task id can be: BullMQ takes them, and so does the listing
      'd'.repeat(300),
      'e'.repeat(300),
    ];
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const bull = new Queue(queue, { connection, prefix: hub.keys.bullPrefix });
    try {
      for (const jobId of ids) await bull.add('task', { payload: jobId.length }, { jobId });
    } finally {
      await bull.close();
      connection.disconnect();
    }
    const pages = await walk(`queue=${queue}&state=waiting&limit=1`);
    expect(pages.flatMap((p) => p.tasks.map((t) => t.id))).toEqual([first, ...ids]);
    // a cursor naming such ids whole (as cursors did before long ids were digested) still works
    const former = { q: queue, t: 'wait', a: 'd'.repeat(300), as: '0:0', n: 'e'.repeat(300) };
    const cursor = b64(JSON.stringify({ ...former, ns: '0:0' }));
    const page = await api<Page>(hub.url, 'GET', `/v1/tasks?queue=${queue}&cursor=${cursor}`);
    expect(page.body.tasks.map((t) => t.id)).toEqual(['e'.repeat(300)]);
  });

  it('walks past jobs whose ids are too long to carry in a cursor, waiting, delayed, completed and failed', async () => {
    // an outside BullMQ producer takes ids of any length: of 1,000 and 5,000 characters here, some
    // of one length sharing all but their last character, between ordinary ones
    const queue = newQueue();
    const idsOf = (state: string) => [
      `${state}-a`.padEnd(1000, 'a'),
      `${state}-b`.padEnd(5000, 'b'),
      `${state}-short`,
      `${state}-`.padEnd(4999, 'p') + 'x',
      `${state}-`.padEnd(4999, 'p') + 'y',
      `${state}-c`.padEnd(1000, 'é'),
      `${state}-d`.padEnd(5000, 'd'),
    ];
    const ids = Object.fromEntries(
      ['waiting', 'delayed', 'completed', 'failed'].map((state) => [state, idsOf(state)]),
    );
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const bull = new Queue(queue, { connection, prefix: hub.keys.bullPrefix });
    try {
      // completed and failed first, by an outside worker, closed before the others are added
      const worker = new Worker<{ fail?: boolean }>(
        queue,
        (job) =>
          job.data.fail ? Promise.reject(new UnrecoverableError('on purpose')) : Promise.resolve(1),
        { connection, prefix: hub.keys.bullPrefix },
      );
      try {
        const finished = ids.completed!.length + ids.failed!.length;
        let count = 0;
        const allFinished = new Promise<void>((resolve) => {
          const onFinished = () => {
            if (++count === finished) resolve();
          };
          worker.on('completed', onFinished).on('failed', onFinished);
        });
        for (const jobId of ids.completed!) await bull.add('task', {}, { jobId });
        for (const jobId of ids.failed!) await bull.add('task', { fail: true }, { jobId });
        await allFinished;
      } finally {
        await worker.close();
      }
      for (const jobId of ids.delayed!) await bull.add('task', {}, { jobId, delay: 3_600_000 });
      ids.waiting!.unshift(await create(queue)); // through the API: the hub knows the queue
      for (const jobId of ids.waiting!.slice(1)) await bull.add('task', {}, { jobId });
    } finally {
      await bull.close();
      connection.disconnect();
    }
    const sorted = (list: string[]) => [...list].sort();
    for (const limit of [1, 2, 3]) {
      for (const [state, expected] of Object.entries(ids)) {
        const pages = await walk(`queue=${queue}&state=${state}&limit=${limit}`);
        const listed = pages.flatMap((p) => p.tasks.map((t) => t.id));
        // every one exactly once; the list oldest first
        if (state === 'waiting') expect(listed).toEqual(expected);
        else expect(sorted(listed)).toEqual(sorted(expected));
      }
      const pages = await walk(`queue=${queue}&limit=${limit}`);
      const listed = pages.flatMap((p) => p.tasks.map((t) => t.id));
      expect(sorted(listed)).toEqual(sorted(Object.values(ids).flat()));
    }
  });

  /**
   * Whether every task that stayed in the listed state for the whole walk was listed, once (a task
   * that left it, and may have come back, may be listed or not).
   */
  const expectEachStayedOnce = (pages: Page[], all: string[], left: Set<string>) => {
    const listed = pages.flatMap((p) => p.tasks.map((t) => t.id));
    const times = (id: string) => listed.filter((listedId) => listedId === id).length;
    const stayed = all.filter((id) => !left.has(id));
    const repeated = stayed.filter((id) => times(id) > 1);
    const missed = stayed.filter((id) => times(id) === 0);
    expect({ repeated, missed }).toEqual({ repeated: [], missed: [] });
  };
  const lastListed = (pages: Page[]) => pages.at(-1)!.tasks.at(-1)!.id;

  it('misses no waiting task and repeats none while tasks are dispatched, cancelled, handed back and created between pages', async () => {
    const queue = newQueue();
    const all: string[] = [];
    for (let i = 0; i < 12; i++) all.push(await create(queue, i));
    const left = new Set<string>();
    /** Registers an agent of the queue: it is handed the oldest waiting task, and accepts it. */
    const takeOldest = async () => {
      const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
        queue,
      ]);
      agents.push(agent);
      const msg = await agent.nextAssignment();
      expect(await agent.accept(msg)).toMatchObject({ ok: true });
      left.add(msg.task.id);
      return { agent, msg };
    };
    const pages = await walk(`queue=${queue}&state=waiting&limit=3`, async (pages) => {
      if (pages.length === 1) {
        await takeOldest(); // leaves at the end the walk started from
        all.push(await create(queue, 'new'));
      } else if (pages.length === 2) {
        // the last task listed, and one listed before, leave from the middle
        for (const id of [lastListed(pages), pages[0]!.tasks[1]!.id]) {
          expect((await api(hub.url, 'POST', `/v1/tasks/${id}/cancel`)).status).toBe(200);
          left.add(id);
        }
      } else if (pages.length === 3) {
        // a task listed on the first page goes to an agent, which hands it back (rate limited):
        // it comes back at the end the walk started from
        const { agent, msg } = await takeOldest();
        expect(
          await agent.fail(msg, {
            error: 'quota',
            retryable: true,
            rateLimitedUntil: Date.now() + 3_600_000,
          }),
        ).toMatchObject({ ok: true });
        expect((await api<TaskView>(hub.url, 'GET', `/v1/tasks/${msg.task.id}`)).body.state).toBe(
          'waiting',
        );
        all.push(await create(queue, 'new'));
      }
    });
    expect(pages.length).toBeGreaterThanOrEqual(4);
    expectEachStayedOnce(pages, all, left);
  });

  it('lists again, and misses none, when the last task listed and the one after it are cancelled between pages', async () => {
    // no bounded cursor tells the tasks listed from the others once both are gone: the walk of
    // the waiting list starts over from the oldest
    const queue = newQueue();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await create(queue, i));
    const pages = await walk(`queue=${queue}&state=waiting&limit=3`, async (pages) => {
      if (pages.length !== 1) return;
      for (const id of [ids[2]!, ids[3]!]) {
        expect((await api(hub.url, 'POST', `/v1/tasks/${id}/cancel`)).status).toBe(200);
      }
    });
    const listed = pages.flatMap((p) => p.tasks.map((t) => t.id));
    const [t0, t1, t2, , t4, t5, t6, t7] = ids;
    expect(listed).toEqual([t0, t1, t2, t0, t1, t4, t5, t6, t7]);
  });

  it.each([
    ['BullMQ retries it', true],
    ['an operator retries it', false],
  ])(
    'misses no waiting task when the last one listed ran, failed and came back to wait between pages (%s)',
    async (_, retryable) => {
      const queue = newQueue();
      const all: string[] = [];
      for (let i = 0; i < 5; i++) {
        const body = { queue, payload: i, attempts: retryable ? 2 : 1 };
        all.push((await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', body)).body.id);
      }
      const left = new Set<string>();
      const pages = await walk(`queue=${queue}&state=waiting&limit=1`, async (pages) => {
        if (pages.length !== 1) return;
        // the task listed goes to an agent and fails; the agent then gets the task after it, and
        // the failed one comes back to wait at the newest end, where the walk has not been yet
        const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
          queue,
        ]);
        agents.push(agent);
        const first = await agent.nextAssignment();
        expect(first.task.id).toBe(lastListed(pages));
        await agent.accept(first);
        const second = agent.nextAssignment();
        const failure = { taskId: first.task.id, token: first.token, error: 'x', retryable };
        expect(await agent.send('task:fail', failure)).toMatchObject({ ok: true });
        const taken = await second;
        await agent.accept(taken);
        if (!retryable) {
          const retried = await api(hub.url, 'POST', `/v1/tasks/${first.task.id}/retry`);
          expect(retried.status).toBe(200);
        }
        left.add(first.task.id).add(taken.task.id);
      });
      expectEachStayedOnce(pages, all, left);
    },
  );

  it('misses no failed task and repeats none while failed tasks are retried between pages', async () => {
    const queue = newQueue();
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    const all: string[] = [];
    for (let i = 0; i < 8; i++) {
      const assigned = agent.nextAssignment();
      all.push(await create(queue, i));
      const msg = await assigned;
      await agent.accept(msg);
      expect(await agent.fail(msg, { error: 'x', retryable: false })).toMatchObject({ ok: true });
    }
    agent.close(); // retried tasks stay waiting
    const left = new Set<string>();
    const retry = async (id: string) => {
      expect((await api(hub.url, 'POST', `/v1/tasks/${id}/retry`)).status).toBe(200);
      left.add(id);
    };
    const pages = await walk(`queue=${queue}&state=failed&limit=2`, async (pages) => {
      if (pages.length === 1) await retry(pages[0]!.tasks[0]!.id);
      if (pages.length === 2) await retry(lastListed(pages));
    });
    expect(pages.length).toBeGreaterThanOrEqual(4);
    expectEachStayedOnce(pages, all, left);
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

  /** A task created with `options` in a queue of its own, pushed to a new agent that accepted it. */
  const acceptedTask = async (options: Record<string, unknown>) => {
    const queue = newQueue();
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    const assigned = agent.nextAssignment();
    const { body: created } = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      ...options,
    });
    const msg = await assigned;
    await agent.accept(msg);
    return { agent, created, msg };
  };

  it('fails a task cancelled while its retry waits for its backoff as cancelled: its logs and attempts kept, retryable', async () => {
    const { agent, created, msg } = await acceptedTask({
      attempts: 3,
      backoff: { type: 'fixed', delayMs: 600_000 },
    });
    await agent.send('task:log', { taskId: msg.task.id, token: msg.token, lines: ['line one'] });
    expect(await agent.fail(msg, { error: 'boom', retryable: true })).toEqual({ ok: true });
    const task = () => api<TaskView>(hub.url, 'GET', `/v1/tasks/${created.id}`);
    expect((await task()).body).toMatchObject({ state: 'delayed', error: 'boom' });

    expect(await api(hub.url, 'POST', `/v1/tasks/${created.id}/cancel`)).toEqual({
      status: 200,
      body: { id: created.id, state: 'cancelled' },
    });
    expect((await task()).body).toMatchObject({
      state: 'cancelled',
      attempt: 1,
      attemptsMade: 1,
      error: 'cancelled by an operator',
    });
    expect((await api(hub.url, 'GET', `/v1/tasks/${created.id}/logs`)).body).toEqual({
      logs: ['line one'],
      count: 1,
    });
    // a second cancel answers the same; a retry runs it again, with its attempts anew
    expect((await api(hub.url, 'POST', `/v1/tasks/${created.id}/cancel`)).status).toBe(200);
    const again = agent.nextAssignment();
    expect((await api(hub.url, 'POST', `/v1/tasks/${created.id}/retry`)).status).toBe(200);
    const rerun = await again;
    expect(rerun).toMatchObject({ task: { id: created.id }, attempt: 1, attempts: 3 });
    await agent.accept(rerun);
    expect(await agent.complete(rerun, 'done')).toEqual({ ok: true });
    expect((await task()).body).toMatchObject({ state: 'completed', result: 'done' });
  });

  it('stores a log batch in one write, its lines in order, keeping the last MAX_TASK_LOG_LINES', async () => {
    const { agent, created, msg } = await acceptedTask({});
    const batch = (first: number) =>
      Array.from({ length: MAX_LOG_LINES }, (_, i) => `line ${first + i}`);
    const client = new Redis(redis.url);
    try {
      const count = async () => ({
        rpush: await commandCalls(client, 'rpush'),
        hgetall: await commandCalls(client, 'hgetall'),
      });
      const before = await count();
      const ack = await agent.send('task:log', {
        taskId: msg.task.id,
        token: msg.token,
        lines: batch(0),
      });
      expect(ack).toEqual({ ok: true });
      // one RPUSH for the 100 lines (BullMQ's addLog: one round trip and one RPUSH a line), and
      // no read of the agent's record first: the replica that extends the lease knows the queue,
      // and the script checks the record where it writes
      const after = await count();
      expect({
        rpush: after.rpush - before.rpush,
        hgetall: after.hgetall - before.hgetall,
      }).toEqual({ rpush: 1, hgetall: 0 });
    } finally {
      client.disconnect();
    }
    const logs = await api<{ logs: string[]; count: number }>(
      hub.url,
      'GET',
      `/v1/tasks/${created.id}/logs?limit=1000`,
    );
    expect(logs.body).toEqual({ logs: batch(0), count: MAX_LOG_LINES });
    // past the bound, the oldest lines go
    const batches = MAX_TASK_LOG_LINES / MAX_LOG_LINES;
    for (let n = 1; n <= batches; n++) {
      const lines = batch(n * MAX_LOG_LINES);
      expect(
        await agent.send('task:log', { taskId: msg.task.id, token: msg.token, lines }),
      ).toEqual({ ok: true });
    }
    const kept = await api<{ logs: string[]; count: number }>(
      hub.url,
      'GET',
      `/v1/tasks/${created.id}/logs?start=0&limit=1`,
    );
    expect(kept.body).toEqual({ logs: [`line ${MAX_LOG_LINES}`], count: MAX_TASK_LOG_LINES });
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
  });

  it('records a progress event in one round trip on the replica holding the lease, and shows it in the task', async () => {
    const { agent, created, msg } = await acceptedTask({});
    const client = new Redis(redis.url);
    try {
      const hgetalls = () => commandCalls(client, 'hgetall');
      const before = await hgetalls();
      const ack = await agent.send('task:progress', {
        taskId: msg.task.id,
        token: msg.token,
        progress: 40,
        message: 'half way',
      });
      expect(ack).toEqual({ ok: true });
      // no read of the agent's record nor of the job (BullMQ's getJob) first: the replica that
      // extends the lease knows the queue, and the script checks the record where it writes
      expect((await hgetalls()) - before).toBe(0);
    } finally {
      client.disconnect();
    }
    const task = await api<TaskView>(hub.url, 'GET', `/v1/tasks/${created.id}`);
    expect(task.body).toMatchObject({
      state: 'running',
      progress: { percent: 40, message: 'half way' },
    });
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
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

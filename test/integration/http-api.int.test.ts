import type { TaskAssign, TaskView } from '@agentcom/shared';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { TEST_ADMIN_KEY, api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

describe('HTTP API', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url);
  });
  afterAll(async () => {
    await hub.close();
    await redis.dispose();
  });

  describe('authentication', () => {
    it.each([
      ['no header', {}],
      ['a wrong key', { authorization: 'Bearer wrong-key-wrong-key' }],
      ['another scheme', { authorization: `Token ${TEST_ADMIN_KEY}` }],
    ])('refuses /v1 with %s: 401 E_UNAUTHORIZED', async (_, headers: Record<string, string>) => {
      for (const [method, path] of [
        ['GET', '/v1/agents'],
        ['POST', '/v1/tasks'],
        ['GET', '/v1/tasks/x'],
      ] as const) {
        const response = await api(
          hub.url,
          method,
          path,
          method === 'POST' ? { payload: 1 } : undefined,
          headers,
        );
        expect(response).toMatchObject({
          status: 401,
          body: { error: { code: 'E_UNAUTHORIZED' } },
        });
      }
    });

    // Every surface behind the admin key: the API, metrics, the agents page, Bull Board.
    const ADMIN_SURFACES = ['/v1/agents', '/metrics', '/', '/admin/queues'];
    const basicOf = (key: string): string => Buffer.from(`admin:${key}`).toString('base64');

    it.each([
      ['a word after the Bearer key', `Bearer ${TEST_ADMIN_KEY} extra`],
      ['the Bearer key twice', `Bearer ${TEST_ADMIN_KEY} ${TEST_ADMIN_KEY}`],
      ['a tab between the Bearer key and a word', `Bearer ${TEST_ADMIN_KEY}\textra`],
      ['a tab between scheme and key', `Bearer\t${TEST_ADMIN_KEY}`],
      ['no space between scheme and key', `Bearer${TEST_ADMIN_KEY}`],
      ['two spaces between scheme and key', `Bearer  ${TEST_ADMIN_KEY}`],
      ['a scheme alone', 'Bearer'],
      ['a word after the Basic credentials', `Basic ${basicOf(TEST_ADMIN_KEY)} extra`],
    ])('refuses %s on every admin surface: 401 E_UNAUTHORIZED', async (_, authorization) => {
      for (const path of ADMIN_SURFACES) {
        const response = await fetch(`${hub.url}${path}`, { headers: { authorization } });
        expect({ path, status: response.status }).toEqual({ path, status: 401 });
        expect(await response.json()).toMatchObject({ error: { code: 'E_UNAUTHORIZED' } });
      }
    });

    it.each([
      ['Bearer, lower case', `bearer ${TEST_ADMIN_KEY}`],
      ['Bearer, upper case', `BEARER ${TEST_ADMIN_KEY}`],
      ['Basic, lower case', `basic ${basicOf(TEST_ADMIN_KEY)}`],
    ])('accepts %s on every admin surface', async (_, authorization) => {
      for (const path of ADMIN_SURFACES) {
        const response = await fetch(`${hub.url}${path}`, { headers: { authorization } });
        await response.arrayBuffer();
        expect({ path, status: response.status }).toEqual({ path, status: 200 });
      }
    });

    it('accepts the key as a Basic password (browsers)', async () => {
      const basic = Buffer.from(`admin:${TEST_ADMIN_KEY}`).toString('base64');
      const response = await api(hub.url, 'GET', '/v1/agents', undefined, {
        authorization: `Basic ${basic}`,
      });
      expect(response.status).toBe(200);
    });

    it("refuses a change sent from another site with the Basic key (a browser's cached credentials): 403 E_FORBIDDEN", async () => {
      const basic = `Basic ${Buffer.from(`admin:${TEST_ADMIN_KEY}`).toString('base64')}`;
      const drain = (headers: Record<string, string>) =>
        api<{ error?: { code: string } }>(
          hub.url,
          'POST',
          '/v1/agents/nobody-here/drain',
          undefined,
          headers,
        );
      const refused = { status: 403, body: { error: { code: 'E_FORBIDDEN' } } };
      expect(await drain({ authorization: basic, 'sec-fetch-site': 'cross-site' })).toMatchObject(
        refused,
      );
      expect(await drain({ authorization: basic, 'sec-fetch-site': 'same-site' })).toMatchObject(
        refused,
      );
      // a browser without Sec-Fetch-Site: by its Origin
      expect(await drain({ authorization: basic, origin: 'http://evil.example' })).toMatchObject(
        refused,
      );
      expect(await drain({ authorization: basic, origin: 'null' })).toMatchObject(refused);
      // Bull Board's actions too
      const board = await fetch(`${hub.url}/admin/queues/api/queues/default/pause`, {
        method: 'PUT',
        headers: { authorization: basic, 'sec-fetch-site': 'cross-site' },
      });
      expect(board.status).toBe(403);
      // allowed: the same origin, a typed URL, a read, a Bearer key, a client that is no browser
      const passed = { status: 404, body: { error: { code: 'E_AGENT_NOT_FOUND' } } };
      for (const headers of <Array<Record<string, string>>>[
        { authorization: basic, 'sec-fetch-site': 'same-origin' },
        { authorization: basic, 'sec-fetch-site': 'none' },
        { authorization: basic, origin: hub.url },
        { authorization: basic },
        { authorization: `Bearer ${TEST_ADMIN_KEY}`, 'sec-fetch-site': 'cross-site' },
      ]) {
        expect(await drain(headers)).toMatchObject(passed);
      }
      const read = await api(hub.url, 'GET', '/v1/agents', undefined, {
        authorization: basic,
        'sec-fetch-site': 'cross-site',
      });
      expect(read.status).toBe(200);
    });

    it('serves health without the key', async () => {
      expect((await api(hub.url, 'GET', '/healthz', undefined, {})).status).toBe(200);
      expect(await api(hub.url, 'GET', '/readyz', undefined, {})).toEqual({
        status: 200,
        body: { ok: true },
      });
    });
  });

  describe('POST /v1/tasks', () => {
    it.each([
      [{}, 'payload'],
      [{ payload: 1, attempts: 0 }, 'attempts'],
      [{ payload: 1, queue: 'bad:queue' }, 'queue'],
      [{ payload: 1, unknown: true }, 'unknown'],
      [{ payload: 1, priority: -1 }, 'priority'],
      // BullMQ's PRIORITY_LIMIT is 2^21 - 1: one more passed validation and BullMQ answered 500
      [{ payload: 1, priority: 2 ** 21 }, 'priority'],
      [{ payload: 1, backoff: { type: 'linear', delayMs: 1 } }, 'backoff'],
      // 2^98 s before the last retry: BullMQ's exponential backoff has no ceiling of its own
      [{ payload: 1, attempts: 100, backoff: { type: 'exponential', delayMs: 1000 } }, 'backoff'],
    ])('rejects %j with E_VALIDATION naming %s', async (body, field) => {
      const response = await api<{ error: { code: string; message: string } }>(
        hub.url,
        'POST',
        '/v1/tasks',
        body,
      );
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('E_VALIDATION');
      expect(response.body.error.message).toContain(field);
    });

    it('rejects a non-JSON body and a body above the limit', async () => {
      const notJson = await fetch(`${hub.url}/v1/tasks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TEST_ADMIN_KEY}`, 'content-type': 'application/json' },
        body: '{"payload":',
      });
      expect(notJson.status).toBe(400);
      expect(((await notJson.json()) as { error: { code: string } }).error.code).toBe(
        'E_VALIDATION',
      );
      const huge = await api<{ error: { code: string } }>(hub.url, 'POST', '/v1/tasks', {
        payload: 'x'.repeat(3 * 1024 * 1024),
      });
      expect(huge.status).toBe(413);
      expect(huge.body.error.code).toBe('E_PAYLOAD_TOO_LARGE');
      const deep = api<{ error: { code: string } }>(hub.url, 'POST', '/v1/tasks', {
        payload: JSON.parse('['.repeat(500) + ']'.repeat(500)) as unknown,
      });
      expect((await deep).body.error.code).toBe('E_VALIDATION');
    });

    it('takes the highest priority BullMQ takes, and runs it after an unprioritized task', async () => {
      const response = await api<{ id: string; state: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        queue: 'priority-edge',
        priority: 2 ** 21 - 1,
      });
      expect(response).toMatchObject({ status: 201, body: { state: 'waiting' } });
      expect(
        (await api<{ priority: number }>(hub.url, 'GET', `/v1/tasks/${response.body.id}`)).body,
      ).toMatchObject({ priority: 2 ** 21 - 1 });
    });

    it('keeps an idempotency key for a delayed task for years while it waits', async () => {
      const delayMs = 2 * 24 * 60 * 60 * 1000;
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        queue: 'delayed-key',
        delayMs,
        idempotencyKey: 'delayed-key-1',
      });
      expect(created.status).toBe(201);
      const key = hub.keys.bullDeduplication('delayed-key', 'delayed-key-1');
      expect(await hub.redis.command.get(key)).toBe(created.body.id);
      // it named the task for 24 h from when it was due: a repeat a day later created it again
      // (idempotency.int.test.ts follows the key through the task's life)
      expect(await hub.redis.command.pttl(key)).toBeGreaterThan(365 * 24 * 60 * 60 * 1000);
    });

    it('answers 200 with the same id for a repeated idempotency key', async () => {
      const first = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        idempotencyKey: 'same-key',
      });
      const second = await api<{ id: string; duplicate: boolean }>(hub.url, 'POST', '/v1/tasks', {
        payload: 2,
        idempotencyKey: 'same-key',
      });
      expect(first.status).toBe(201);
      expect(second).toMatchObject({ status: 200, body: { id: first.body.id, duplicate: true } });
    });

    it('scopes an idempotency key to its queue: the same key in another queue is another task', async () => {
      const inA = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        queue: 'key-scope-a',
        idempotencyKey: 'scoped-key',
      });
      const inB = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        queue: 'key-scope-b',
        idempotencyKey: 'scoped-key',
      });
      const againInA = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        queue: 'key-scope-a',
        idempotencyKey: 'scoped-key',
      });
      expect([inA.status, inB.status, againInA.status]).toEqual([201, 201, 200]);
      expect(inB.body.id).not.toBe(inA.body.id);
      expect(againInA.body.id).toBe(inA.body.id);
    });

    it('shows a created task as waiting, a delayed one as delayed', async () => {
      const waiting = await api<{ id: string; state: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: { a: 1 },
        queue: 'nobody-serves',
      });
      expect(waiting.body.state).toBe('waiting');
      const view = await api(hub.url, 'GET', `/v1/tasks/${waiting.body.id}`);
      expect(view.body).toMatchObject({
        id: waiting.body.id,
        queue: 'nobody-serves',
        state: 'waiting',
        payload: { a: 1 },
        attempts: 3,
      });
      const delayed = await api<{ id: string; state: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        delayMs: 60_000,
      });
      expect(delayed.body.state).toBe('delayed');
      expect(
        (await api<{ state: string }>(hub.url, 'GET', `/v1/tasks/${delayed.body.id}`)).body.state,
      ).toBe('delayed');
    });
  });

  describe('an idempotency key whose task retention trimmed (it outlives the task)', () => {
    // A replica that keeps no finished task: each is trimmed as it finishes; the key stays 24 h.
    let trimming: Hub & { url: string };
    let agent: TestAgent;
    const queue = 'trimmed';
    beforeAll(async () => {
      trimming = await startTestHub(redis.url, {
        RETENTION_COMPLETED_COUNT: '0',
        RETENTION_FAILED_COUNT: '0',
      });
      agent = await TestAgent.register(trimming.url, 'trimmed-agent', [queue]);
    });
    afterAll(async () => {
      agent.close();
      await trimming.close();
    });

    /** Creates a task with `key`, runs it on the agent to `report`'s outcome, and checks it is gone. */
    async function runToTrimmed(
      key: string,
      report: (msg: TaskAssign) => Promise<unknown>,
    ): Promise<string> {
      const assigned = agent.nextAssignment();
      const created = await api<{ id: string }>(trimming.url, 'POST', '/v1/tasks', {
        queue,
        payload: key,
        idempotencyKey: key,
      });
      expect(created.status).toBe(201);
      const msg = await assigned;
      expect(await agent.accept(msg)).toMatchObject({ ok: true });
      expect(await report(msg)).toMatchObject({ ok: true });
      // no longer kept, its outcome known: 410 (tests below check its body)
      expect((await api(trimming.url, 'GET', `/v1/tasks/${created.body.id}`)).status).toBe(410);
      return created.body.id;
    }

    const repeat = (key: string) =>
      api(trimming.url, 'POST', '/v1/tasks', { queue, payload: 'again', idempotencyKey: key });

    it('answers the outcome of its report: completed, failed, cancelled (a running task)', async () => {
      const completed = await runToTrimmed('k-completed', (msg) => agent.complete(msg, { n: 1 }));
      expect(await repeat('k-completed')).toEqual({
        status: 200,
        body: { id: completed, state: 'completed', duplicate: true },
      });

      const fail = (msg: TaskAssign) => agent.fail(msg, { error: 'broken', retryable: false });
      const failed = await runToTrimmed('k-failed', fail);
      expect(await repeat('k-failed')).toEqual({
        status: 200,
        body: { id: failed, state: 'failed', duplicate: true },
      });

      const cancelled = await runToTrimmed('k-cancelled', async (msg) => {
        const cancel = api(trimming.url, 'POST', `/v1/tasks/${msg.task.id}/cancel`);
        expect(await cancel).toMatchObject({ status: 202 });
        return fail(msg);
      });
      expect(await repeat('k-cancelled')).toEqual({
        status: 200,
        body: { id: cancelled, state: 'cancelled', duplicate: true },
      });
      // nothing was created again
      expect(
        (await api<{ tasks: unknown[] }>(trimming.url, 'GET', `/v1/tasks?queue=${queue}`)).body
          .tasks,
      ).toEqual([]);
    });

    it('answers a report whose replica died after BullMQ took it by its intent', async () => {
      const admin = new Redis(redis.url);
      try {
        for (const [outcome, intent] of [
          ['completed', 'completing'],
          ['failed', 'failing'],
        ] as const) {
          const key = `k-intent-${outcome}`;
          let token = '';
          const id = await runToTrimmed(key, (msg) => {
            token = msg.token;
            return outcome === 'completed'
              ? agent.complete(msg, null)
              : agent.fail(msg, { error: 'broken', retryable: false });
          });
          // as the replica that died between BullMQ's part and the marker leaves it
          await admin.set(trimming.keys.finished(id), `${intent} ${token} ${queue} 0 0`);
          expect(await repeat(key)).toEqual({
            status: 200,
            body: { id, state: outcome, duplicate: true },
          });
        }
      } finally {
        admin.disconnect();
      }
    });

    it('answers the outcome to GET too: 410 E_TASK_TRIMMED with {id, state}', async () => {
      const trimmedView = (id: string) => api(trimming.url, 'GET', `/v1/tasks/${id}`);
      const completed = await runToTrimmed('g-completed', (msg) => agent.complete(msg, 1));
      expect(await trimmedView(completed)).toEqual({
        status: 410,
        body: {
          error: {
            code: 'E_TASK_TRIMMED',
            message: `Task ${completed} completed; retention no longer keeps it, its outcome only is known`,
            details: { id: completed, state: 'completed' },
          },
        },
      });
      const fail = (msg: TaskAssign) => agent.fail(msg, { error: 'broken', retryable: false });
      const failed = await runToTrimmed('g-failed', fail);
      expect(await trimmedView(failed)).toMatchObject({
        status: 410,
        body: { error: { details: { id: failed, state: 'failed' } } },
      });
      const cancelled = await runToTrimmed('g-cancelled', async (msg) => {
        expect(await api(trimming.url, 'POST', `/v1/tasks/${msg.task.id}/cancel`)).toMatchObject({
          status: 202,
        });
        return fail(msg);
      });
      expect(await trimmedView(cancelled)).toMatchObject({
        status: 410,
        body: { error: { details: { id: cancelled, state: 'cancelled' } } },
      });
    });

    it('answers `removed` when no outcome of it is recorded either', async () => {
      const id = await runToTrimmed('k-unrecorded', (msg) => agent.complete(msg, null));
      // as a task that ended without a report of its agent (stalled too often) leaves it
      const admin = new Redis(redis.url);
      try {
        expect(await admin.del(trimming.keys.finished(id))).toBe(1);
      } finally {
        admin.disconnect();
      }
      expect(await repeat('k-unrecorded')).toEqual({
        status: 200,
        body: { id, state: 'removed', duplicate: true },
      });
      expect(await api(trimming.url, 'GET', `/v1/tasks/${id}`)).toMatchObject({
        status: 404,
        body: { error: { code: 'E_TASK_NOT_FOUND' } },
      });
    });
  });

  describe('GET of a finished task retention trimmed (RETENTION_*_COUNT 1)', () => {
    // keeps the last finished task of each kind: the one before is trimmed as the next finishes
    let keeping: Hub & { url: string };
    let agent: TestAgent;
    const queue = 'keeps-one';
    beforeAll(async () => {
      keeping = await startTestHub(redis.url, {
        RETENTION_COMPLETED_COUNT: '1',
        RETENTION_FAILED_COUNT: '1',
      });
      agent = await TestAgent.register(keeping.url, 'keeps-one-agent', [queue]);
    });
    afterAll(async () => {
      agent.close();
      await keeping.close();
    });

    /** Creates a task and runs it on the agent to `report`'s outcome. */
    async function run(report: (msg: TaskAssign) => Promise<unknown>): Promise<string> {
      const assigned = agent.nextAssignment();
      const created = await api<{ id: string }>(keeping.url, 'POST', '/v1/tasks', {
        queue,
        payload: {},
      });
      const msg = await assigned;
      expect(await agent.accept(msg)).toMatchObject({ ok: true });
      expect(await report(msg)).toMatchObject({ ok: true });
      return created.body.id;
    }
    const get = (id: string) => api<TaskView>(keeping.url, 'GET', `/v1/tasks/${id}`);
    const fail = (msg: TaskAssign) => agent.fail(msg, { error: 'broken', retryable: false });

    it('answers its outcome once the next finished task trimmed it, where it answered 404', async () => {
      const first = await run((msg) => agent.complete(msg, 'first'));
      expect(await get(first)).toMatchObject({ status: 200, body: { state: 'completed' } });
      const failed = await run(fail);
      expect(await get(failed)).toMatchObject({ status: 200, body: { state: 'failed' } });

      const second = await run((msg) => agent.complete(msg, 'second'));
      expect(await get(second)).toMatchObject({ status: 200, body: { state: 'completed' } });
      expect(await get(first)).toMatchObject({
        status: 410,
        body: { error: { code: 'E_TASK_TRIMMED', details: { id: first, state: 'completed' } } },
      });
      await run(fail);
      expect(await get(failed)).toMatchObject({
        status: 410,
        body: { error: { code: 'E_TASK_TRIMMED', details: { id: failed, state: 'failed' } } },
      });
    });
  });

  describe('POST /v1/tasks/batch', () => {
    type Created = { id: string; state: string; duplicate: boolean };
    const batch = (tasks: unknown[]) =>
      api<{ tasks: Created[]; error?: { code: string; message: string } }>(
        hub.url,
        'POST',
        '/v1/tasks/batch',
        { tasks },
      );

    it('creates every task, over several queues, answering in the order of the request', async () => {
      const response = await batch([
        { payload: { n: 0 }, queue: 'batch-a' },
        { payload: { n: 1 }, queue: 'batch-b', delayMs: 60_000 },
        { payload: { n: 2 }, queue: 'batch-a', priority: 3, labels: { team: 'x' } },
      ]);
      expect(response.status).toBe(201);
      expect(response.body.tasks.map((t) => [t.state, t.duplicate])).toEqual([
        ['waiting', false],
        ['delayed', false],
        ['waiting', false],
      ]);
      expect(new Set(response.body.tasks.map((t) => t.id)).size).toBe(3);
      const views = await Promise.all(
        response.body.tasks.map(
          async (t) =>
            (await api<{ queue: string; payload: unknown }>(hub.url, 'GET', `/v1/tasks/${t.id}`))
              .body,
        ),
      );
      expect(views).toMatchObject([
        { queue: 'batch-a', payload: { n: 0 }, state: 'waiting' },
        { queue: 'batch-b', payload: { n: 1 }, state: 'delayed' },
        { queue: 'batch-a', payload: { n: 2 }, labels: { team: 'x' } },
      ]);
    });

    it('creates nothing when one task is invalid, and names it', async () => {
      const response = await batch([
        { payload: 1, queue: 'batch-invalid' },
        { payload: 2, queue: 'batch-invalid', attempts: 0 },
      ]);
      expect(response.status).toBe(400);
      expect(response.body.error?.code).toBe('E_VALIDATION');
      expect(response.body.error?.message).toContain('tasks.1.attempts');
      const listed = await api<{ tasks: unknown[] }>(
        hub.url,
        'GET',
        '/v1/tasks?queue=batch-invalid',
      );
      expect(listed).toMatchObject({ status: 200, body: { tasks: [] } });
    });

    it('creates nothing in any queue when one task has a priority BullMQ refuses', async () => {
      const response = await batch([
        { payload: 'b1', queue: 'batch-edge-b' },
        { payload: 'a', queue: 'batch-edge-a', priority: 2 ** 21 },
        { payload: 'b2', queue: 'batch-edge-b' },
      ]);
      expect(response).toMatchObject({ status: 400, body: { error: { code: 'E_VALIDATION' } } });
      expect(response.body.error?.message).toContain('tasks.1.priority');
      for (const queue of ['batch-edge-a', 'batch-edge-b']) {
        const listed = await api<{ tasks: unknown[] }>(hub.url, 'GET', `/v1/tasks?queue=${queue}`);
        expect(listed).toMatchObject({ status: 200, body: { tasks: [] } });
      }
    });

    it.each([
      ['no task', []],
      ['more than 500 tasks', Array.from({ length: 501 }, () => ({ payload: 1 }))],
    ])('refuses %s with E_VALIDATION', async (_, tasks) => {
      const response = await batch(tasks);
      expect(response).toMatchObject({ status: 400, body: { error: { code: 'E_VALIDATION' } } });
    });

    it('marks a task whose idempotency key names an earlier task as a duplicate', async () => {
      const first = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        payload: 1,
        idempotencyKey: 'batch-key',
      });
      const response = await batch([
        { payload: 2, idempotencyKey: 'batch-key' },
        { payload: 3, idempotencyKey: 'batch-fresh' },
        { payload: 4, idempotencyKey: 'batch-fresh' },
      ]);
      expect(response.status).toBe(201);
      const [again, fresh, freshAgain] = response.body.tasks;
      expect(again).toMatchObject({ id: first.body.id, duplicate: true });
      expect(fresh).toMatchObject({ duplicate: false });
      expect(freshAgain).toMatchObject({ id: fresh?.id, duplicate: true });
      const allDuplicates = await batch([{ payload: 5, idempotencyKey: 'batch-key' }]);
      expect(allDuplicates.status).toBe(200);
    });
  });

  it('answers 404 E_TASK_NOT_FOUND, E_AGENT_NOT_FOUND and E_NOT_FOUND', async () => {
    expect((await api(hub.url, 'GET', '/v1/tasks/does-not-exist')).body).toMatchObject({
      error: { code: 'E_TASK_NOT_FOUND' },
    });
    expect((await api(hub.url, 'GET', '/v1/agents/nobody')).body).toMatchObject({
      error: { code: 'E_AGENT_NOT_FOUND' },
    });
    expect(await api(hub.url, 'GET', '/v1/nothing')).toMatchObject({
      status: 404,
      body: { error: { code: 'E_NOT_FOUND' } },
    });
  });

  describe('POST /v1/agents', () => {
    it('mints a token shown once and stores only its hash; a second call rotates it', async () => {
      const first = await api<{ token: string; agentId: string }>(hub.url, 'POST', '/v1/agents', {
        agentId: 'hashy',
        queues: ['q1'],
      });
      expect(first.status).toBe(201);
      expect(first.body.token).toMatch(/^agc_[A-Za-z0-9_-]{43}$/);
      const client = new Redis(redis.url);
      const dump = JSON.stringify(await client.hgetall(`{${hub.config.prefix}}:agent:hashy`));
      client.disconnect();
      expect(dump).not.toContain(first.body.token);
      expect(dump).not.toContain(first.body.token.slice(4));
      const second = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', {
        agentId: 'hashy',
      });
      expect(second.status).toBe(200);
      expect(second.body.token).not.toBe(first.body.token);
      const listed = await api<{
        agents: Array<{ agentId: string; state: string; queues: string[] }>;
      }>(hub.url, 'GET', '/v1/agents');
      expect(listed.body.agents).toContainEqual(
        expect.objectContaining({ agentId: 'hashy', state: 'offline', queues: ['q1'] }),
      );
    });

    it('closes the connection made with the old token when it rotates the token', async () => {
      const agent = await TestAgent.register(hub.url, 'rotated', ['rotq']);
      try {
        const told = new Promise((resolve) => agent.socket.once('hub:error', resolve));
        const closed = agent.disconnected();
        const rotated = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', {
          agentId: 'rotated',
        });
        expect(rotated.status).toBe(200);
        expect(await told).toEqual({
          code: 'E_UNAUTHORIZED',
          message: 'the agent token was replaced',
        });
        expect(await closed).toBe('io server disconnect');
        // the old token is refused from now on, the new one is taken
        const stale = new TestAgent(hub.url, 'rotated', agent.token, ['rotq']);
        await expect(stale.connect()).rejects.toMatchObject({ data: { code: 'E_UNAUTHORIZED' } });
        stale.close();
        const fresh = new TestAgent(hub.url, 'rotated', rotated.body.token, ['rotq']);
        await fresh.connect();
        fresh.close();
      } finally {
        agent.close();
      }
    });

    it('ends a connection whose token was revoked at its next heartbeat when the message closing it was lost', async () => {
      // Redis pub/sub delivers at most once: a revoke's disconnect can miss a replica whose
      // subscriber is reconnecting. Revoked here without that message (the store alone).
      const agent = await TestAgent.register(hub.url, 'unheard-revoke', ['revq']);
      try {
        expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true });
        expect(await hub.agents.revokeToken('unheard-revoke')).toBe(true);
        const told = new Promise((resolve) => agent.socket.once('hub:error', resolve));
        const closed = agent.disconnected();
        expect(await agent.send('agent:heartbeat', {})).toEqual({
          ok: false,
          code: 'E_UNAUTHORIZED',
          message: 'the agent token was revoked or replaced',
        });
        expect(await told).toEqual({
          code: 'E_UNAUTHORIZED',
          message: 'the agent token was revoked or replaced',
        });
        expect(await closed).toBe('io server disconnect');
      } finally {
        agent.close();
      }
    });

    it('refuses a connection whose token is revoked between its handshake and its connect', async () => {
      // The revoke's disconnect goes to the agent's room before the new socket has joined it:
      // here it lands right after the handshake read the record.
      const created = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', {
        agentId: 'racer',
      });
      const store = hub.agents;
      const read = store.get.bind(store);
      let raced = false;
      store.get = async (agentId: string) => {
        const record = await read(agentId);
        if (agentId === 'racer' && !raced) {
          raced = true;
          expect((await api(hub.url, 'DELETE', '/v1/agents/racer')).status).toBe(200);
        }
        return record;
      };
      const agent = new TestAgent(hub.url, 'racer', created.body.token);
      try {
        const told = new Promise((resolve) => agent.socket.once('hub:error', resolve));
        const closed = agent.disconnected();
        await agent.connect(); // the handshake passed
        expect(await told).toEqual({
          code: 'E_UNAUTHORIZED',
          message: 'the agent token was revoked or replaced',
        });
        expect(await closed).toBe('io server disconnect');
        expect(raced).toBe(true);
        const view = await api<{ state: string }>(hub.url, 'GET', '/v1/agents/racer');
        expect(view.body.state).toBe('offline');
      } finally {
        store.get = read;
        agent.close();
      }
    });

    it('rejects a bad agent id', async () => {
      const response = await api<{ error: { code: string } }>(hub.url, 'POST', '/v1/agents', {
        agentId: 'has:colon',
      });
      expect(response).toMatchObject({ status: 400, body: { error: { code: 'E_VALIDATION' } } });
    });
  });
});

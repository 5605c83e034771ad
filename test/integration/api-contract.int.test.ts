import { connect } from 'node:net';
import { isErrorCode, type TaskAssign } from '@agentcom/shared';
import { z } from 'zod';
import type { Hub } from '../../hub/src/hub';
import { BULL_BOARD_PATH } from '../../hub/src/http/bull-board';
import { TEST_ADMIN_KEY, startTestHub } from '../helpers/hub';
import type { RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/**
 * The OpenAPI document (/docs/openapi.json) against the routes a real hub serves: every route is
 * in it, and what each route answers to the requests below, success and every class of error,
 * is declared there, status, media type and body schema.
 */

interface MediaType {
  schema?: Record<string, unknown>;
}
interface Operation {
  responses: Record<string, { content?: Record<string, MediaType> }>;
}
interface Document {
  paths: Record<string, Record<string, Operation>>;
}

const KEY = { authorization: `Bearer ${TEST_ADMIN_KEY}` };
const BASIC = `Basic ${Buffer.from(`admin:${TEST_ADMIN_KEY}`).toString('base64')}`;
const CROSS_SITE = { authorization: BASIC, 'sec-fetch-site': 'cross-site' };

/** `(method, path)` of every route the app serves, from Fastify's own route tree. */
function registeredRoutes(app: Hub['app']): Array<[string, string]> {
  const routes: Array<[string, string]> = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const branch = line.indexOf('── ');
    if (branch < 0) continue;
    const depth = (branch - 1) / 4;
    const match = /^(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line.slice(branch + 3))!;
    stack.length = depth;
    stack.push(match[1]!);
    const path = stack.join('');
    for (const method of match[2]?.split(', ') ?? []) routes.push([method, path]);
  }
  return routes;
}

/** The document's path of a route (`/v1/tasks/:id` → `/v1/tasks/{id}`). */
const documentPath = (path: string): string => path.replace(/:([A-Za-z]+)/g, '{$1}');

describe('the API contract: the OpenAPI document against a real hub', () => {
  const fixture = useTestHub();
  let redis: RedisProcess;
  let hub: TestHub;
  let document: Document;

  beforeAll(async () => {
    ({ redis, hub } = fixture);
    document = (await (await fetch(`${hub.url}/docs/openapi.json`)).json()) as Document;
  });

  /**
   * Sends a request for `route` (the document's path and method) and checks its answer against
   * the document: the status is declared, with the answer's media type, and a JSON body is valid
   * against the declared schema; an error body has a code of shared's table.
   */
  async function call(
    route: string,
    path: string,
    init: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
  ): Promise<{ status: number; body: unknown }> {
    const method = init.method ?? 'GET';
    // a string or bytes go as they are (with the content type of `headers`), anything else as JSON
    const raw = typeof init.body === 'string' || init.body instanceof Uint8Array;
    const response = await fetch(`${hub.url}${path}`, {
      method,
      headers: {
        ...(init.body !== undefined && !raw ? { 'content-type': 'application/json' } : {}),
        ...(init.headers ?? KEY),
      },
      ...(init.body === undefined
        ? {}
        : { body: raw ? (init.body as string | Uint8Array) : JSON.stringify(init.body) }),
    });
    const text = await response.text();
    const status = response.status;
    const where = `${method} ${path} answered ${status} ${text.slice(0, 200)}`;
    const operation = document.paths[route]?.[method.toLowerCase()];
    expect({ where, documented: operation !== undefined }).toEqual({ where, documented: true });
    const declared = operation!.responses[String(status)];
    expect({ where, declared: declared !== undefined }).toEqual({ where, declared: true });
    const mediaType = (response.headers.get('content-type') ?? '').split(';')[0]!;
    const media = declared!.content?.[mediaType];
    expect({ where, mediaType, declared: media !== undefined }).toEqual({
      where,
      mediaType,
      declared: true,
    });
    if (mediaType !== 'application/json') return { status, body: text };
    const body = JSON.parse(text) as unknown;
    if (media!.schema !== undefined) {
      const parsed = z.fromJSONSchema(media!.schema as never).safeParse(body);
      expect({ where, issues: parsed.error?.issues }).toEqual({ where, issues: undefined });
    }
    if (status >= 400) {
      const code = (body as { error: { code: unknown } }).error.code;
      expect({ where, known: isErrorCode(code) }).toEqual({ where, known: true });
    }
    return { status, body };
  }

  const codeOf = (answer: { body: unknown }): unknown =>
    (answer.body as { error?: { code?: unknown } }).error?.code;

  it('documents every route the hub serves, and serves every route it documents', () => {
    const served = registeredRoutes(hub.app)
      // HEAD comes with every GET; Bull Board's own routes are its UI's (one entry, its page)
      .filter(([method, path]) => method !== 'HEAD' && !path.startsWith(`${BULL_BOARD_PATH}/`))
      .map(([method, path]) => `${method} ${documentPath(path)}`);
    expect(served.length).toBeGreaterThan(20);
    const documented = Object.entries(document.paths).flatMap(([path, operations]) =>
      Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(served.filter((route) => !documented.includes(route))).toEqual([]);
    for (const route of documented) {
      const [method, path] = route.split(' ') as [string, string];
      const url = path.replace(/\{([A-Za-z]+)\}/g, ':$1');
      expect({ route, served: hub.app.hasRoute({ method: method as 'GET', url }) }).toEqual({
        route,
        served: true,
      });
    }
  });

  it('health, docs, metrics, queues, the agents page and Bull Board: as documented, 401 without the key', async () => {
    expect((await call('/healthz', '/healthz', { headers: {} })).status).toBe(200);
    expect((await call('/readyz', '/readyz', { headers: {} })).status).toBe(200);
    expect((await call('/docs', '/docs', { headers: {} })).status).toBe(200);
    expect((await call('/docs/openapi.json', '/docs/openapi.json', { headers: {} })).status).toBe(
      200,
    );
    for (const path of [
      '/metrics',
      '/v1/queues',
      '/',
      '/ui/socket.io.min.js',
      '/ui/socket.io.min.js.map',
      BULL_BOARD_PATH,
    ]) {
      expect((await call(path, path)).status).toBe(200);
      const refused = await call(path, path, { headers: {} });
      expect({ path, status: refused.status, code: codeOf(refused) }).toEqual({
        path,
        status: 401,
        code: 'E_UNAUTHORIZED',
      });
    }
  });

  it('tasks: every route, its successes and errors, as documented', async () => {
    const created = await call('/v1/tasks', '/v1/tasks', {
      method: 'POST',
      body: { payload: 1, queue: 'contract', idempotencyKey: 'contract-1' },
    });
    expect(created.status).toBe(201);
    const id = (created.body as { id: string }).id;
    const expectations: Array<[string, string, Parameters<typeof call>[2], number, string?]> = [
      [
        '/v1/tasks',
        '/v1/tasks',
        { method: 'POST', body: { payload: 2, queue: 'contract', idempotencyKey: 'contract-1' } },
        200,
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        { method: 'POST', body: { payload: 1, attempts: 0 } },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        {
          method: 'POST',
          body: '{"payload":',
          headers: { ...KEY, 'content-type': 'application/json' },
        },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        { method: 'POST', body: '', headers: { ...KEY, 'content-type': 'application/json' } },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        {
          method: 'POST',
          body: 'a=1',
          headers: { ...KEY, 'content-type': 'application/x-www-form-urlencoded' },
        },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        {
          method: 'POST',
          body: Buffer.from('{"payload":"\xff"}', 'latin1'),
          headers: { ...KEY, 'content-type': 'application/json' },
        },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        { method: 'POST', body: { payload: 'x'.repeat(3 * 1024 * 1024) } },
        413,
        'E_PAYLOAD_TOO_LARGE',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        { method: 'POST', body: { payload: 1 }, headers: {} },
        401,
        'E_UNAUTHORIZED',
      ],
      [
        '/v1/tasks',
        '/v1/tasks',
        { method: 'POST', body: { payload: 1 }, headers: CROSS_SITE },
        403,
        'E_FORBIDDEN',
      ],
      [
        '/v1/tasks/batch',
        '/v1/tasks/batch',
        { method: 'POST', body: { tasks: [{ payload: 1, queue: 'contract' }] } },
        201,
      ],
      [
        '/v1/tasks/batch',
        '/v1/tasks/batch',
        {
          method: 'POST',
          body: { tasks: [{ payload: 1, queue: 'contract', idempotencyKey: 'contract-1' }] },
        },
        200,
      ],
      [
        '/v1/tasks/batch',
        '/v1/tasks/batch',
        { method: 'POST', body: { tasks: [] } },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks/batch',
        '/v1/tasks/batch',
        { method: 'POST', body: { tasks: [] }, headers: CROSS_SITE },
        403,
        'E_FORBIDDEN',
      ],
      ['/v1/tasks', '/v1/tasks?queue=contract&limit=1', {}, 200],
      ['/v1/tasks', '/v1/tasks?limit=0', {}, 400, 'E_VALIDATION'],
      ['/v1/tasks', '/v1/tasks?cursor=made-up', {}, 400, 'E_VALIDATION'],
      ['/v1/tasks', '/v1/tasks', { headers: {} }, 401, 'E_UNAUTHORIZED'],
      ['/v1/tasks/{id}', `/v1/tasks/${id}`, {}, 200],
      ['/v1/tasks/{id}', '/v1/tasks/nothing-here', {}, 404, 'E_TASK_NOT_FOUND'],
      ['/v1/tasks/{id}', '/v1/tasks/bad:id', {}, 400, 'E_VALIDATION'],
      ['/v1/tasks/{id}', '/v1/tasks/%E0%A4%A', {}, 400, 'E_VALIDATION'],
      ['/v1/tasks/{id}', `/v1/tasks/${'a'.repeat(300)}`, {}, 400, 'E_VALIDATION'],
      ['/v1/tasks/{id}', `/v1/tasks/${id}`, { headers: {} }, 401, 'E_UNAUTHORIZED'],
      ['/v1/tasks/{id}/logs', `/v1/tasks/${id}/logs`, {}, 200],
      ['/v1/tasks/{id}/logs', `/v1/tasks/${id}/logs?start=-1`, {}, 400, 'E_VALIDATION'],
      ['/v1/tasks/{id}/logs', '/v1/tasks/nothing-here/logs', {}, 404, 'E_TASK_NOT_FOUND'],
      ['/v1/tasks/{id}/retry', `/v1/tasks/${id}/retry`, { method: 'POST' }, 409, 'E_INVALID_STATE'],
      [
        '/v1/tasks/{id}/retry',
        '/v1/tasks/nothing-here/retry',
        { method: 'POST' },
        404,
        'E_TASK_NOT_FOUND',
      ],
      [
        '/v1/tasks/{id}/retry',
        `/v1/tasks/${id}/retry`,
        { method: 'POST', headers: CROSS_SITE },
        403,
        'E_FORBIDDEN',
      ],
      [
        '/v1/tasks/{id}/cancel',
        `/v1/tasks/${id}/cancel`,
        { method: 'POST', body: { why: 1 } },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/tasks/{id}/cancel',
        '/v1/tasks/nothing-here/cancel',
        { method: 'POST' },
        404,
        'E_TASK_NOT_FOUND',
      ],
      [
        '/v1/tasks/{id}/cancel',
        `/v1/tasks/${id}/cancel`,
        { method: 'POST', body: { reason: 'x'.repeat(3 * 1024 * 1024) } },
        413,
        'E_PAYLOAD_TOO_LARGE',
      ],
      [
        '/v1/tasks/{id}/cancel',
        `/v1/tasks/${id}/cancel`,
        { method: 'POST', body: { reason: 'contract' } },
        200,
      ],
    ];
    for (const [route, path, init, status, code] of expectations) {
      const answer = await call(route, path, init);
      const got = { route, path, status: answer.status, code: codeOf(answer) };
      expect(got).toEqual({ route, path, status, code });
    }
  });

  it('says what is wrong with a refused body, Content-Type or path id', async () => {
    const messageOf = (answer: { body: unknown }): string =>
      (answer.body as { error: { message: string } }).error.message;
    const refused = async (route: string, path: string, init: Parameters<typeof call>[2]) => {
      const answer = await call(route, path, init);
      expect({ path, status: answer.status, code: codeOf(answer) }).toEqual({
        path,
        status: 400,
        code: 'E_VALIDATION',
      });
      return messageOf(answer);
    };
    const json = { ...KEY, 'content-type': 'application/json' };
    // valid JSON, refused for a key that could poison prototypes: not "not valid JSON"
    for (const body of [
      '{"payload":1,"__proto__":{"x":1}}',
      '{"payload":{"a":[{"__proto__":null}]}}',
      '{"payload":{"constructor":{"prototype":{"x":1}}}}',
    ]) {
      const message = await refused('/v1/tasks', '/v1/tasks', {
        method: 'POST',
        body,
        headers: json,
      });
      expect({ body, message }).toEqual({
        body,
        message: expect.stringMatching(/valid JSON but .*"__proto__".*"constructor".*not allowed/),
      });
    }
    expect(
      await refused('/v1/tasks', '/v1/tasks', {
        method: 'POST',
        body: '{"payload":',
        headers: json,
      }),
    ).toMatch(/not valid JSON/);
    // a Content-Type the API does not parse: the one received and the one expected
    for (const type of ['application/xml', 'application/x-www-form-urlencoded; charset=utf-8']) {
      const message = await refused('/v1/tasks', '/v1/tasks', {
        method: 'POST',
        body: 'a=1',
        headers: { ...KEY, 'content-type': type },
      });
      expect(message).toBe(
        `Content-Type ${JSON.stringify(type)} is not supported: send the body as application/json`,
      );
    }
    expect(
      await refused('/v1/tasks/{id}/cancel', '/v1/tasks/x/cancel', {
        method: 'POST',
        body: new TextEncoder().encode('{}'),
      }),
    ).toBe('the body has no Content-Type: send it as application/json');
    // an id too long: the id schema's limit, however long it is
    const tooLong = 'path: id: Too big: expected string to have <=128 characters';
    for (const length of [129, 257, 300, 5000]) {
      const id = 'a'.repeat(length);
      expect({ length, message: await refused('/v1/tasks/{id}', `/v1/tasks/${id}`, {}) }).toEqual({
        length,
        message: tooLong,
      });
      expect({
        length,
        message: await refused('/v1/tasks/{id}/logs', `/v1/tasks/${id}/logs`, {}),
      }).toEqual({ length, message: tooLong });
      expect({ length, message: await refused('/v1/agents/{id}', `/v1/agents/${id}`, {}) }).toEqual(
        { length, message: tooLong },
      );
    }
  });

  it('a cancel of a completed task answers 409, of a running one 202; a retry of a failed one 200', async () => {
    const agent = await TestAgent.register(hub.url, 'contract-agent', ['contract-run']);
    try {
      const run = async (): Promise<TaskAssign> => {
        const assigned = agent.nextAssignment();
        await call('/v1/tasks', '/v1/tasks', {
          method: 'POST',
          body: { payload: 1, queue: 'contract-run', attempts: 1 },
        });
        const msg = await assigned;
        expect(await agent.accept(msg)).toMatchObject({ ok: true });
        return msg;
      };
      const failure = (msg: TaskAssign) => ({
        taskId: msg.task.id,
        token: msg.token,
        error: 'broken',
        retryable: false,
      });
      const completed = await run();
      expect(await agent.complete(completed, null)).toMatchObject({ ok: true });
      const cancelCompleted = await call(
        '/v1/tasks/{id}/cancel',
        `/v1/tasks/${completed.task.id}/cancel`,
        { method: 'POST' },
      );
      expect([cancelCompleted.status, codeOf(cancelCompleted)]).toEqual([409, 'E_INVALID_STATE']);

      const running = await run();
      const cancelRunning = await call(
        '/v1/tasks/{id}/cancel',
        `/v1/tasks/${running.task.id}/cancel`,
        { method: 'POST' },
      );
      expect(cancelRunning.status).toBe(202);
      // the agent stops it, and is free for the next
      expect(await agent.send('task:fail', failure(running))).toMatchObject({ ok: true });
      const failed = await run();
      expect(await agent.send('task:fail', failure(failed))).toMatchObject({ ok: true });
      const retried = await call('/v1/tasks/{id}/retry', `/v1/tasks/${failed.task.id}/retry`, {
        method: 'POST',
      });
      expect(retried.status).toBe(200);
    } finally {
      agent.close();
    }
  });

  it('agents: every route, its successes and errors, as documented', async () => {
    const expectations: Array<[string, string, Parameters<typeof call>[2], number, string?]> = [
      [
        '/v1/agents',
        '/v1/agents',
        { method: 'POST', body: { agentId: 'contract-a', queues: ['q'] } },
        201,
      ],
      ['/v1/agents', '/v1/agents', { method: 'POST', body: { agentId: 'contract-a' } }, 200],
      [
        '/v1/agents',
        '/v1/agents',
        { method: 'POST', body: { agentId: 'has:colon' } },
        400,
        'E_VALIDATION',
      ],
      [
        '/v1/agents',
        '/v1/agents',
        { method: 'POST', body: { agentId: 'x' }, headers: CROSS_SITE },
        403,
        'E_FORBIDDEN',
      ],
      ['/v1/agents', '/v1/agents', {}, 200],
      ['/v1/agents', '/v1/agents', { headers: {} }, 401, 'E_UNAUTHORIZED'],
      ['/v1/agents/{id}', '/v1/agents/contract-a', {}, 200],
      ['/v1/agents/{id}', '/v1/agents/nobody-here', {}, 404, 'E_AGENT_NOT_FOUND'],
      ['/v1/agents/{id}', '/v1/agents/bad:id', {}, 400, 'E_VALIDATION'],
      ['/v1/agents/{id}/drain', '/v1/agents/contract-a/drain', { method: 'POST' }, 200],
      [
        '/v1/agents/{id}/drain',
        '/v1/agents/nobody-here/drain',
        { method: 'POST' },
        404,
        'E_AGENT_NOT_FOUND',
      ],
      [
        '/v1/agents/{id}/drain',
        '/v1/agents/contract-a/drain',
        { method: 'POST', headers: CROSS_SITE },
        403,
        'E_FORBIDDEN',
      ],
      ['/v1/agents/{id}/resume', '/v1/agents/contract-a/resume', { method: 'POST' }, 200],
      [
        '/v1/agents/{id}/resume',
        '/v1/agents/nobody-here/resume',
        { method: 'POST' },
        404,
        'E_AGENT_NOT_FOUND',
      ],
      [
        '/v1/agents/{id}/resume',
        '/v1/agents/bad:id/resume',
        { method: 'POST' },
        400,
        'E_VALIDATION',
      ],
      ['/v1/agents/{id}', '/v1/agents/nobody-here', { method: 'DELETE' }, 404, 'E_AGENT_NOT_FOUND'],
      [
        '/v1/agents/{id}',
        '/v1/agents/contract-a',
        { method: 'DELETE', headers: CROSS_SITE },
        403,
        'E_FORBIDDEN',
      ],
      ['/v1/agents/{id}', '/v1/agents/contract-a', { method: 'DELETE' }, 200],
    ];
    for (const [route, path, init, status, code] of expectations) {
      const answer = await call(route, path, init);
      const got = { route, path, status: answer.status, code: codeOf(answer) };
      expect(got).toEqual({ route, path, status, code });
    }
  });

  it('readyz answers 503 as documented while the replica stops', async () => {
    const stopping = await startTestHub(redis.url, { SHUTDOWN_DELAY_MS: '2000' });
    const closed = stopping.close();
    try {
      const response = await fetch(`${stopping.url}/readyz`);
      const body = (await response.json()) as unknown;
      const declared = document.paths['/readyz']!.get!.responses['503']!;
      expect(response.status).toBe(503);
      const schema = declared.content!['application/json']!.schema!;
      expect(z.fromJSONSchema(schema as never).safeParse(body).success).toBe(true);
      expect(body).toEqual({ ok: false, problems: ['draining'] });
    } finally {
      await closed;
    }
  });

  describe("errors no route sees answer in the API's format", () => {
    const errorBody = z
      .object({
        error: z
          .object({
            code: z.string().refine(isErrorCode),
            message: z.string(),
            details: z.unknown().optional(),
          })
          .strict(),
      })
      .strict();

    /** Sends `request` as it is (no client would) and reads the whole answer. */
    const raw = (request: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect(hub.port, '127.0.0.1', () => socket.end(request));
        let answer = '';
        socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
        socket.on('close', () => resolve(answer));
        socket.on('error', reject);
      });
    const parse = (answer: string): { status: number; body: unknown } => {
      const [head, body] = answer.split('\r\n\r\n') as [string, string];
      return { status: Number(head.split(' ')[1]), body: JSON.parse(body) as unknown };
    };

    it.each([
      ['a header line without a colon', 'GET /v1/tasks HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'],
      [
        'Content-Length with Transfer-Encoding',
        'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
      ],
      ['a bad Content-Length', 'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n'],
      [
        'a malformed chunk',
        'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      ],
    ])('a request that is not valid HTTP (%s): 400 E_VALIDATION', async (_, request) => {
      const answer = parse(await raw(request));
      expect(answer.status).toBe(400);
      expect(errorBody.parse(answer.body).error.code).toBe('E_VALIDATION');
    });

    it('headers above the limit: 413 E_PAYLOAD_TOO_LARGE', async () => {
      const response = await fetch(`${hub.url}/healthz`, {
        headers: { 'x-big': 'a'.repeat(20_000) },
      });
      expect(response.status).toBe(413);
      expect(errorBody.parse(await response.json()).error.code).toBe('E_PAYLOAD_TOO_LARGE');
    });

    it.each([
      ['an unknown path', 'GET', '/v1/nothing', KEY, 404, 'E_NOT_FOUND'],
      ['an unknown path, without the key', 'GET', '/v1/nothing', {}, 404, 'E_NOT_FOUND'],
      ['a method the path has no route for', 'PUT', '/v1/tasks', KEY, 404, 'E_NOT_FOUND'],
      [
        'a method the path has no route for, without the key',
        'DELETE',
        '/v1/tasks/x',
        {},
        404,
        'E_NOT_FOUND',
      ],
      [
        'an unknown path of Bull Board',
        'GET',
        `${BULL_BOARD_PATH}/nothing`,
        KEY,
        404,
        'E_NOT_FOUND',
      ],
      [
        'an unknown path of Bull Board, without the key',
        'GET',
        `${BULL_BOARD_PATH}/nothing`,
        {},
        404,
        'E_NOT_FOUND',
      ],
    ])('%s', async (_, method, path, headers, status, code) => {
      const response = await fetch(`${hub.url}${path}`, { method, headers });
      const body = errorBody.parse(await response.json());
      expect([response.status, body.error.code]).toEqual([status, code]);
    });
  });
});

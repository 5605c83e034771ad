import type { TaskAssign } from '@agentcom/shared';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

const KEY = { authorization: `Bearer ${TEST_ADMIN_KEY}` };

/** A request with a body sent as it is (`api` sends JSON only). */
async function send(
  url: string,
  path: string,
  body: string | undefined,
  contentType?: string,
): Promise<{ status: number; body: { error?: { code: string; message: string } } }> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { ...KEY, ...(contentType ? { 'content-type': contentType } : {}) },
    ...(body === undefined ? {} : { body }),
  });
  return { status: response.status, body: (await response.json()) as never };
}

/** The task routes take only what they document: bodies and query numbers, strictly. */
describe('task routes, strict about bodies and query numbers', () => {
  const fixture = useTestHub();
  let taskId: string;

  beforeAll(async () => {
    const created = await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', {
      queue: 'nobody-serves',
      payload: 1,
    });
    expect(created.status).toBe(201);
    taskId = created.body.id;
  });

  // not plain decimal digits, or out of range: Number() read `0x10` as 16, `1e1` as 10, ` 1` and
  // `1.0` as 1, an empty value as 0
  const NOT_DECIMAL = ['0x10', '0o7', '0b1', '1e1', '+1', ' 1', '1 ', '1.0', '1.5', '', 'Infinity'];
  const cases: Array<[string, string, string[]]> = [
    ['start', `/v1/tasks/:id/logs?start=`, [...NOT_DECIMAL, '-1', '-0', '9'.repeat(400)]],
    ['limit', `/v1/tasks/:id/logs?limit=`, [...NOT_DECIMAL, '0', '1001', '-5']],
    ['limit', `/v1/tasks?limit=`, [...NOT_DECIMAL, '0', '501']],
  ];

  it.each(cases)(
    'refuses a %s that is not a decimal integer in range: %s',
    async (name, path, values) => {
      for (const value of values) {
        const url = `${path.replace(':id', taskId)}${encodeURIComponent(value)}`;
        const response = await api<{ error: { code: string; message: string } }>(
          fixture.hub.url,
          'GET',
          url,
        );
        expect({ value, status: response.status, code: response.body.error?.code }).toEqual({
          value,
          status: 400,
          code: 'E_VALIDATION',
        });
        expect(response.body.error.message).toContain(`query: ${name}:`);
      }
    },
  );

  it('takes plain decimal integers in range, and refuses a repeated one', async () => {
    for (const path of [
      `/v1/tasks/${taskId}/logs?start=16&limit=1000`,
      `/v1/tasks/${taskId}/logs?start=0&limit=1`,
      `/v1/tasks/${taskId}/logs?start=007`,
      '/v1/tasks?limit=500',
      '/v1/tasks?limit=1',
    ]) {
      expect({ path, status: (await api(fixture.hub.url, 'GET', path)).status }).toEqual({
        path,
        status: 200,
      });
    }
    const repeated = await api<{ error: { code: string } }>(
      fixture.hub.url,
      'GET',
      '/v1/tasks?limit=1&limit=2',
    );
    expect(repeated).toMatchObject({ status: 400, body: { error: { code: 'E_VALIDATION' } } });
  });

  describe('POST /v1/tasks/:id/retry takes no body', () => {
    let agent: TestAgent;

    /** Runs the task `taskId` of queue `retried` to a failure; resolves once it is failed. */
    const failed = async (assignment: Promise<TaskAssign>): Promise<void> => {
      const msg = await assignment;
      expect((await agent.fail(msg, { error: 'broken', retryable: false })).ok).toBe(true);
      await eventually(
        async () =>
          (await api<{ state: string }>(fixture.hub.url, 'GET', `/v1/tasks/${msg.task.id}`)).body
            .state === 'failed' || undefined,
        { what: 'the task failed' },
      );
    };

    it('refuses any body but none, an empty one or {}', async () => {
      agent = await TestAgent.register(fixture.hub.url, 'retry-agent', ['retried']);
      fixture.agents.push(agent);
      const first = agent.nextAssignment();
      const created = await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', {
        queue: 'retried',
        payload: 'x',
        attempts: 1,
      });
      expect(created.status).toBe(201);
      const path = `/v1/tasks/${created.body.id}/retry`;
      await failed(first);

      const refused: Array<[string, string | undefined]> = [
        ['{"x":1}', 'application/json'],
        ['{"reason":"again"}', 'application/json'],
        ['[]', 'application/json'],
        ['null', 'application/json'],
        ['""', 'application/json'],
        ['0', 'application/json'],
        ['please', 'text/plain'],
        ['{}', 'text/plain'],
      ];
      for (const [body, type] of refused) {
        const response = await send(fixture.hub.url, path, body, type);
        expect({ body, type, status: response.status, code: response.body.error?.code }).toEqual({
          body,
          type,
          status: 400,
          code: 'E_VALIDATION',
        });
        expect(response.body.error?.message).toContain('body:');
      }
      // none of them retried it
      const still = await api<{ state: string }>(
        fixture.hub.url,
        'GET',
        `/v1/tasks/${created.body.id}`,
      );
      expect(still.body.state).toBe('failed');

      const accepted: Array<[string | undefined, string | undefined]> = [
        [undefined, undefined],
        ['', 'text/plain'],
        ['{}', 'application/json'],
      ];
      for (const [body, type] of accepted) {
        const next = agent.nextAssignment();
        const response = await send(fixture.hub.url, path, body, type);
        expect({ body, type, status: response.status }).toEqual({ body, type, status: 200 });
        await failed(next);
      }
    });
  });

  describe('POST /v1/tasks/:id/cancel', () => {
    it('refuses unknown body fields, and takes no body or an empty one', async () => {
      const create = async () =>
        (
          await api<{ id: string }>(fixture.hub.url, 'POST', '/v1/tasks', {
            queue: 'nobody-serves',
            payload: 2,
          })
        ).body.id;
      const id = await create();
      for (const body of ['{"reason":"r","force":true}', '{"x":1}', '{"Reason":"r"}']) {
        const response = await send(
          fixture.hub.url,
          `/v1/tasks/${id}/cancel`,
          body,
          'application/json',
        );
        expect({ body, status: response.status, code: response.body.error?.code }).toEqual({
          body,
          status: 400,
          code: 'E_VALIDATION',
        });
        expect(response.body.error?.message).toContain('body:');
      }
      const states = await api<{ state: string }>(fixture.hub.url, 'GET', `/v1/tasks/${id}`);
      expect(states.body.state).toBe('waiting');

      for (const [body, type] of [
        [undefined, undefined],
        ['', 'text/plain'],
        ['{"reason":"no longer needed"}', 'application/json'],
      ] as const) {
        const response = await send(
          fixture.hub.url,
          `/v1/tasks/${await create()}/cancel`,
          body,
          type,
        );
        expect({ body, type, status: response.status }).toEqual({ body, type, status: 200 });
      }
    });
  });
});

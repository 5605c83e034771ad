import { PassThrough, Readable } from 'node:stream';
import type { AgentView, ListAgentsResponse } from '@agentcom/shared';
import { runOperatorCli } from '../../sidecar/src/operator/program';
import { commandCalls } from '../helpers/commandstats';
import { TEST_ADMIN_KEY, api, startTestHub } from '../helpers/hub';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/**
 * `GET /v1/agents` page by page (a cursor that names the last agent listed, pages read from an
 * index by id), its query refused when malformed, the operator CLI following the pages, and the
 * agent routes that take no body refusing one.
 */
describe('the agents listing, page by page', () => {
  const fixture = useTestHub();
  let hub: TestHub;
  beforeAll(() => ({ hub } = fixture));

  /** Every agent id Redis holds (the agents set), in the listing's order (code units). */
  const allIds = async (of: TestHub = hub): Promise<string[]> =>
    (await fixture.admin.smembers(of.keys.agents)).sort();

  const register = async (ids: readonly string[], on: TestHub = hub): Promise<void> => {
    await Promise.all(ids.map((id) => on.agents.register(id, `hash-${id}`)));
  };

  const page = async (query: string, on: TestHub = hub) => {
    const response = await api<ListAgentsResponse>(on.url, 'GET', `/v1/agents${query}`);
    expect(response.status).toBe(200);
    return response.body;
  };

  /** Every page from the first, `limit` at a time, then `between` after each page but the last. */
  const walk = async (
    limit: number,
    on: TestHub = hub,
    between: (cursor: string) => Promise<void> = async () => {},
  ): Promise<{ ids: string[]; sizes: number[] }> => {
    const ids: string[] = [];
    const sizes: number[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 1000; pages++) {
      const body = await page(
        `?limit=${limit}${cursor === undefined ? '' : `&cursor=${encodeURIComponent(cursor)}`}`,
        on,
      );
      ids.push(...body.agents.map((agent) => agent.agentId));
      sizes.push(body.agents.length);
      cursor = body.nextCursor;
      if (cursor === undefined) return { ids, sizes };
      await between(cursor);
    }
    throw new Error('the walk did not end');
  };

  it('answers pages of at most `limit` agents in id order, 1,000 by default, the last without a cursor', async () => {
    // ids whose code-unit order differs from a locale's (`B` before `a`, `_` between them)
    const mixed = ['b-2', 'B-1', 'a_3', 'A.4', '0-5', 'z9', 'Z8', 'm_x', 'a-10'];
    const filler = Array.from({ length: 96 }, (_, i) => `fill-${String(i).padStart(3, '0')}`);
    await register([...mixed, ...filler]);
    const ids = await allIds();
    expect(ids).toHaveLength(105);

    const { ids: walked, sizes } = await walk(7);
    expect(walked).toEqual(ids);
    expect(sizes).toEqual([...Array<number>(15).fill(7)]);

    // the default page is the largest: a client that reads no cursor sees all 105
    const first = await page('');
    expect(first).toEqual({ agents: expect.any(Array) });
    expect(first.agents.map((agent) => agent.agentId)).toEqual(ids);
    // a page after a cursor ends where the agents do
    const second = await page(`?limit=100&cursor=${ids[99]}`);
    expect(second).toEqual({ agents: expect.any(Array) });
    expect(second.agents.map((agent) => agent.agentId)).toEqual(ids.slice(100));

    // the largest page holds them all; a page shows each agent as GET /v1/agents/:id does
    const whole = await page('?limit=1000');
    expect(whole.nextCursor).toBeUndefined();
    expect(whole.agents.map((agent) => agent.agentId)).toEqual(ids);
    const one = await api<AgentView>(hub.url, 'GET', '/v1/agents/B-1');
    expect(whole.agents.find((agent) => agent.agentId === 'B-1')).toEqual(one.body);
  });

  it.each([
    ['limit=0x10', 'limit: must be a whole number in decimal digits'],
    ['limit=1e2', 'limit: must be a whole number in decimal digits'],
    ['limit=%2B5', 'limit: must be a whole number in decimal digits'],
    ['limit=5.0', 'limit: must be a whole number in decimal digits'],
    ['limit=-1', 'limit: must be a whole number in decimal digits'],
    ['limit=', 'limit: must be a whole number in decimal digits'],
    ['limit=%205', 'limit: must be a whole number in decimal digits'],
    ['limit=0', 'limit: Too small: expected number to be >=1'],
    ['limit=1001', 'limit: Too big: expected number to be <=1000'],
    ['limit=99999999999999999999999', 'limit: must be 1 to 1000'],
    ['limit=5&limit=6', 'limit: '],
    ['cursor=', 'cursor: not a cursor this API returned'],
    ['cursor=a%3Ab', 'cursor: not a cursor this API returned'],
    [`cursor=${'a'.repeat(129)}`, 'cursor: not a cursor this API returned'],
    ['cursor=%7Bagentcom%7D', 'cursor: not a cursor this API returned'],
    ['after=a', 'Unrecognized key: "after"'],
    ['state=idle', 'Unrecognized key: "state"'],
  ])('refuses the query %s with E_VALIDATION', async (query, message) => {
    const response = await api<{ error: { code: string; message: string } }>(
      hub.url,
      'GET',
      `/v1/agents?${query}`,
    );
    expect({ status: response.status, code: response.body.error?.code }).toEqual({
      status: 400,
      code: 'E_VALIDATION',
    });
    expect(response.body.error.message).toContain(`query: ${message}`);
  });

  it('lists exactly once every agent present throughout a walk, whatever is added or removed between pages', async () => {
    const stay = Array.from({ length: 20 }, (_, i) => `walk-${String(i).padStart(2, '0')}`);
    await register(stay);
    const before = await allIds();
    const removed = new Set<string>();
    let round = 0;
    const { ids } = await walk(4, hub, async (cursor) => {
      round++;
      // added: before the cursor (not listed), right after it and at the end (listed)
      await register([`${cursor}-added`, `0-added-${round}`, `zzzz-added-${round}`]);
      // removed as a future delete would (record, set, index): the cursor's own agent, and one
      // not listed yet (whose neighbours must still be listed)
      const ahead = before.find((id) => id > cursor && !removed.has(id) && !stay.includes(id));
      const gone = [cursor, ...(ahead === undefined ? [] : [ahead])];
      for (const id of gone) {
        removed.add(id);
        await fixture.admin
          .multi()
          .del(hub.keys.agent(id))
          .srem(hub.keys.agents, id)
          .zrem(hub.keys.agentsById, id)
          .exec();
      }
    });
    expect(round).toBeGreaterThan(5);
    // in id order, none twice
    expect(ids).toEqual([...new Set(ids)].sort());
    // every agent there from the first page to the last was listed
    const throughout = before.filter((id) => !removed.has(id));
    expect(throughout.filter((id) => !ids.includes(id))).toEqual([]);
    // none removed before its page was read, none added behind the walk
    expect(ids.filter((id) => id.startsWith('0-added-'))).toEqual([]);
    expect(ids.filter((id) => id.endsWith('-added')).length).toBe(round);
  });

  it("reads only the page's agent records, whatever the number of agents", async () => {
    await register(Array.from({ length: 300 }, (_, i) => `cost-${String(i).padStart(3, '0')}`));
    expect((await allIds()).length).toBeGreaterThan(300);
    const hgetall = await commandCalls(fixture.admin, 'hgetall');
    expect((await page('?limit=10')).agents).toHaveLength(10);
    // the page's 10 records (nothing else reads records here: no agent is connected, no task)
    expect((await commandCalls(fixture.admin, 'hgetall')) - hgetall).toBe(10);
  });

  it('lists every agent of a Redis written by the previous version (no id index), and agents written to the set alone', async () => {
    // a previous version's data: the records and the agents set, no index (`register` writes it
    // now, so it is dropped); a replica of this version then starts on it
    await register(Array.from({ length: 450 }, (_, i) => `old-${String(i).padStart(3, '0')}`));
    await fixture.admin.del(hub.keys.agentsById);
    expect(await fixture.admin.exists(hub.keys.agentsById)).toBe(0);
    const started = await startTestHub(fixture.redis.url, { AGENTCOM_PREFIX: hub.config.prefix });
    try {
      const ids = await allIds(started);
      expect(ids.length).toBeGreaterThan(400);
      expect((await walk(150, started)).ids).toEqual(ids);

      // an agent written to the set alone (a replica of the previous version registering it
      // during a rolling upgrade) is listed from the next page on
      await fixture.admin
        .multi()
        .hset(hub.keys.agent('0-0-set-only'), { state: 'offline', version: '0', tokenHash: 'h' })
        .sadd(hub.keys.agents, '0-0-set-only')
        .exec();
      const first = await page('?limit=1', started);
      expect(first.agents.map((agent) => agent.agentId)).toEqual(['0-0-set-only']);
    } finally {
      await started.close();
    }
  });

  it('the CLI shows every agent, page by page: `agents` and `agents --watch`', async () => {
    // more than one page of the largest size (1,000)
    await register(Array.from({ length: 1001 }, (_, i) => `cli-${String(i).padStart(4, '0')}`));
    const ids = await allIds();
    expect(ids.length).toBeGreaterThan(1000);
    const run = async (args: string[]) => {
      const stdout = new PassThrough();
      let out = '';
      stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      const code = await runOperatorCli(['node', 'agentcom', ...args], {
        stdin: Readable.from([]),
        stdout,
        stderr: new PassThrough(),
        env: { AGENTCOM_URL: hub.url, AGENTCOM_ADMIN_KEY: TEST_ADMIN_KEY },
        stdoutIsTty: false,
        stderrIsTty: false,
        columns: () => undefined,
        interrupted: new AbortController().signal,
        now: Date.now,
      });
      return { code, out };
    };
    const listed = await run(['--json', 'agents']);
    expect(listed.code).toBe(0);
    const agents = (JSON.parse(listed.out) as { agents: AgentView[] }).agents;
    expect(agents.map((agent) => agent.agentId)).toEqual(ids);

    const watched = await run(['--json', 'agents', '--watch', '--watch-count', '1']);
    expect(watched.code).toBe(0);
    const refresh = JSON.parse(watched.out.trim()) as { agents: AgentView[] };
    expect(refresh.agents.map((agent) => agent.agentId)).toEqual(ids);

    const table = await run(['agents']);
    expect(table.out.trim().split('\n').slice(1)).toHaveLength(ids.length);
  });
});

describe('the agent routes that take no body', () => {
  const fixture = useTestHub();
  let hub: TestHub;
  beforeAll(() => ({ hub } = fixture));

  type Sent = { type: string; body: string } | undefined;
  const send = async (method: string, path: string, sent: Sent) => {
    const response = await fetch(`${hub.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${TEST_ADMIN_KEY}`,
        ...(sent ? { 'content-type': sent.type } : {}),
      },
      ...(sent ? { body: sent.body } : {}),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const json = (body: string): Sent => ({ type: 'application/json', body });
  const drainOf = async (id: string) =>
    (await api<AgentView>(hub.url, 'GET', `/v1/agents/${id}`)).body.drainRequested;

  const REFUSED: Array<[string, Sent]> = [
    ['a JSON object with a field', json('{"reason":"maintenance"}')],
    ['null', json('null')],
    ['an array', json('[]')],
    ['a number', json('0')],
    ['a string', json('""')],
    ['text', { type: 'text/plain', body: 'please' }],
  ];
  const ACCEPTED: Array<[string, Sent]> = [
    ['none', undefined],
    ['{}', json('{}')],
    ['an empty text body', { type: 'text/plain', body: '' }],
  ];
  const refusal = {
    status: 400,
    body: {
      error: {
        code: 'E_VALIDATION',
        message: 'body: this route takes no body: send none, or {}',
      },
    },
  };

  it.each(REFUSED)('refuses %s on drain, resume and delete, changing nothing', async (_, sent) => {
    const id = `nobody-${Math.random().toString(36).slice(2, 8)}`;
    await hub.agents.register(id, 'hash');
    expect(await send('POST', `/v1/agents/${id}/drain`, sent)).toEqual(refusal);
    expect(await drainOf(id)).toBeUndefined();

    await send('POST', `/v1/agents/${id}/drain`, undefined);
    expect(await send('POST', `/v1/agents/${id}/resume`, sent)).toEqual(refusal);
    expect(await drainOf(id)).toBe('operator');

    expect(await send('DELETE', `/v1/agents/${id}`, sent)).toEqual(refusal);
    expect((await hub.agents.get(id))?.tokenHash).toBe('hash');
  });

  it.each(ACCEPTED)('takes %s on drain, resume and delete', async (_, sent) => {
    const id = `nobody-${Math.random().toString(36).slice(2, 8)}`;
    await hub.agents.register(id, 'hash');
    expect(await send('POST', `/v1/agents/${id}/drain`, sent)).toEqual({
      status: 200,
      body: { agentId: id, state: 'offline' },
    });
    expect(await drainOf(id)).toBe('operator');
    expect((await send('POST', `/v1/agents/${id}/resume`, sent)).status).toBe(200);
    expect(await drainOf(id)).toBeUndefined();
    expect(await send('DELETE', `/v1/agents/${id}`, sent)).toEqual({
      status: 200,
      body: { agentId: id, revoked: true },
    });
    expect((await hub.agents.get(id))?.tokenHash).toBeUndefined();
  });
});

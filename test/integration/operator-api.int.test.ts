import { randomBytes } from 'node:crypto';
import type { AgentView, TaskAssign, TaskView } from '@agentcom/shared';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { sumMetric } from '../helpers/metrics';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

const NO_AUTH = {};
const basic = (password: string) => ({
  authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`,
});

describe('operator API: tasks, agents, queues, metrics, Bull Board, docs', () => {
  const fixture = useTestHub({ hubIds: ['hub-a', 'hub-b', 'hub-c'] });
  const { agents } = fixture;
  let hubs: readonly TestHub[];
  beforeAll(() => ({ hubs } = fixture));

  const url = (i: number) => hubs[i % hubs.length]!.url;
  const newQueue = () => `q-${randomBytes(4).toString('hex')}`;
  const register = async (i: number, queue: string) => {
    const agent = await TestAgent.register(url(i), `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return agent;
  };

  it('lists tasks with queue and state filters, page by page with the cursor', async () => {
    const queue = newQueue();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++)
      ids.push(
        (await api<{ id: string }>(url(i), 'POST', '/v1/tasks', { queue, payload: i })).body.id,
      );
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page++) {
      const query = `/v1/tasks?queue=${queue}&state=waiting&limit=3${cursor ? `&cursor=${cursor}` : ''}`;
      const response = await api<{ tasks: TaskView[]; nextCursor?: string }>(
        url(page),
        'GET',
        query,
      );
      expect(response.status).toBe(200);
      expect(response.body.tasks.length).toBeLessThanOrEqual(3);
      seen.push(...response.body.tasks.map((t) => t.id));
      cursor = response.body.nextCursor;
      if (!cursor) break;
    }
    expect(seen.sort()).toEqual([...ids].sort());
    expect((await api(url(0), 'GET', `/v1/tasks?queue=${queue}&state=completed`)).body).toEqual({
      tasks: [],
    });
    expect((await api(url(0), 'GET', '/v1/tasks?state=sleeping')).status).toBe(400);
    expect((await api(url(0), 'GET', '/v1/tasks?limit=0')).status).toBe(400);
    expect((await api(url(0), 'GET', '/v1/tasks?cursor=garbage')).status).toBe(400);
    expect((await api(url(0), 'GET', '/v1/tasks', undefined, NO_AUTH)).status).toBe(401);
  });

  it('shows a task log, and retries a failed task with fresh attempts', async () => {
    const queue = newQueue();
    const agent = await register(0, queue);
    const created = await api<{ id: string }>(url(1), 'POST', '/v1/tasks', {
      queue,
      payload: 1,
      attempts: 1,
    });
    const msg = await agent.assignmentOf(created.body.id);
    await agent.accept(msg);
    await agent.send('task:log', {
      taskId: msg.task.id,
      token: msg.token,
      lines: ['working', 'still working'],
    });
    await agent.fail(msg, { error: 'nope', retryable: true });
    expect((await api<TaskView>(url(2), 'GET', `/v1/tasks/${created.body.id}`)).body.state).toBe(
      'failed',
    );
    const logs = await api<{ logs: string[]; count: number }>(
      url(2),
      'GET',
      `/v1/tasks/${created.body.id}/logs`,
    );
    expect(logs.body).toEqual({ logs: ['working', 'still working'], count: 2 });
    expect((await api(url(2), 'GET', `/v1/tasks/${created.body.id}/logs?limit=5000`)).status).toBe(
      400,
    );
    expect((await api(url(2), 'GET', '/v1/tasks/none/logs')).status).toBe(404);

    const next = agent.nextAssignment(); // the push may arrive before the retry's answer
    const retried = await api(url(2), 'POST', `/v1/tasks/${created.body.id}/retry`);
    expect(retried).toMatchObject({ status: 200, body: { id: created.body.id, state: 'waiting' } });
    const again = await next;
    expect(again).toMatchObject({ task: { id: created.body.id }, attempt: 1 });
    await agent.accept(again);
    await agent.complete(again, 'second go');
    expect((await api(url(0), 'POST', `/v1/tasks/${created.body.id}/retry`)).body).toMatchObject({
      error: { code: 'E_INVALID_STATE' },
    });
    expect((await api(url(0), 'POST', '/v1/tasks/none/retry')).status).toBe(404);
  });

  it("ends an agent's own drain (its sidecar stopping) with its connection; an operator's drain outlasts reconnects", async () => {
    const reconnect = async (agent: TestAgent, hub: number) => {
      const closed = agent.disconnected();
      agent.close();
      await closed;
      const again = new TestAgent(url(hub), agent.agentId, agent.token, agent.queues);
      agents.push(again);
      await again.connect();
      // handled once the connect is recorded: its answer names the state the connect left
      const beat = (await again.send('agent:heartbeat', {})) as { state?: string };
      return { again, state: beat.state };
    };

    // the sidecar drains itself on SIGTERM, stops, and is started again: it takes tasks
    const queue = newQueue();
    const stopping = await register(0, queue);
    expect(await stopping.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    const { again: restarted, state: restartedState } = await reconnect(stopping, 1);
    expect(restartedState).toBe('idle');
    const assigned = restarted.nextAssignment();
    const created = await api<{ id: string }>(url(2), 'POST', '/v1/tasks', { queue, payload: 1 });
    expect((await assigned).task.id).toBe(created.body.id);

    // an operator's drain stays, also when the sidecar then drains itself too
    const kept = await register(0, newQueue());
    await api(url(1), 'POST', `/v1/agents/${kept.agentId}/drain`);
    expect(await kept.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    expect((await reconnect(kept, 2)).state).toBe('draining');
  });

  it("lets agent:resume lift only the agent's own drain: an operator's is refused E_FORBIDDEN", async () => {
    const queue = newQueue();
    const agent = await register(0, queue);
    expect(await agent.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    expect(await agent.send('agent:resume', {})).toEqual({ ok: true, state: 'idle' });
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(url(1), 'POST', '/v1/tasks', { queue, payload: 1 });
    const msg = await assigned;
    expect(msg.task.id).toBe(created.body.id);
    await agent.accept(msg);
    await agent.complete(msg, 'done');

    await api(url(1), 'POST', `/v1/agents/${agent.agentId}/drain`);
    expect(await agent.send('agent:resume', {})).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    // also when the sidecar drained itself on top of it
    expect(await agent.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    expect(await agent.send('agent:resume', {})).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    const view = await api<{ state: string }>(url(2), 'GET', `/v1/agents/${agent.agentId}`);
    expect(view.body.state).toBe('draining');
    const waiting = await api<{ id: string }>(url(1), 'POST', '/v1/tasks', { queue, payload: 2 });
    const pushed = agent.nextAssignment(); // may arrive before the resume's answer
    expect((await api(url(2), 'POST', `/v1/agents/${agent.agentId}/resume`)).body).toMatchObject({
      state: 'idle',
    });
    expect((await pushed).task.id).toBe(waiting.body.id);
    expect(agent.assignments).toHaveLength(2);
  });

  it('drains and resumes an agent, and revokes it on every replica', async () => {
    const queue = newQueue();
    const agent = await register(0, queue);
    const drained = await api(url(1), 'POST', `/v1/agents/${agent.agentId}/drain`);
    expect(drained.body).toEqual({ agentId: agent.agentId, state: 'draining' });
    const created = await api<{ id: string }>(url(1), 'POST', '/v1/tasks', { queue, payload: 1 });
    await eventually(async () =>
      (await api<TaskView>(url(2), 'GET', `/v1/tasks/${created.body.id}`)).body.state === 'waiting'
        ? true
        : undefined,
    );
    expect(agent.assignments).toHaveLength(0);
    const assigned = agent.nextAssignment();
    expect((await api(url(2), 'POST', `/v1/agents/${agent.agentId}/resume`)).body).toEqual({
      agentId: agent.agentId,
      state: 'idle',
    });
    expect((await assigned).task.id).toBe(created.body.id);

    const disconnected = withTimeout(agent.disconnected(), 1000, 'disconnect within 1 s');
    expect(await api(url(2), 'DELETE', `/v1/agents/${agent.agentId}`)).toEqual({
      status: 200,
      body: { agentId: agent.agentId, revoked: true },
    });
    await disconnected;
    await expect(
      new TestAgent(url(1), agent.agentId, agent.token, [queue]).connect(),
    ).rejects.toMatchObject({ data: { code: 'E_UNAUTHORIZED' } });
    for (const [method, path] of [
      ['POST', '/v1/agents/ghost/drain'],
      ['POST', '/v1/agents/ghost/resume'],
      ['DELETE', '/v1/agents/ghost'],
    ] as const) {
      expect((await api(url(0), method, path)).body).toMatchObject({
        error: { code: 'E_AGENT_NOT_FOUND' },
      });
      expect((await api(url(0), method, path, undefined, NO_AUTH)).status).toBe(401);
    }
    expect((await api(url(0), 'POST', '/v1/agents/bad:id/drain')).status).toBe(400);
  });

  it('puts back the task of a revoked agent at once, without an attempt, and gives it to another agent once', async () => {
    // A revoked agent can never report again (its token is gone): its task used to wait for the
    // lease (LEASE_MS, 60 s by default) after the revoke, and an idle one stayed in the idle
    // indexes, claimable, until its disconnect was recorded.
    for (const accepted of [false, true]) {
      const queue = newQueue();
      const revoked = await register(0, queue);
      const created = await api<{ id: string }>(url(1), 'POST', '/v1/tasks', { queue, payload: 1 });
      const msg = await revoked.assignmentOf(created.body.id);
      if (accepted) expect(await revoked.accept(msg)).toMatchObject({ ok: true });
      const closed = revoked.disconnected();
      expect((await api(url(2), 'DELETE', `/v1/agents/${revoked.agentId}`)).status).toBe(200);
      // when the revoke answers: the agent holds nothing, the task waits with no attempt used
      const view = await api<AgentView>(url(1), 'GET', `/v1/agents/${revoked.agentId}`);
      expect(view.body).toMatchObject({ state: 'offline' });
      expect(view.body.currentTask).toBeUndefined();
      const task = await api<TaskView>(url(1), 'GET', `/v1/tasks/${created.body.id}`);
      expect(task.body).toMatchObject({ state: 'waiting', attemptsMade: 0 });
      await closed;
      const other = await register(1, queue);
      const again = await other.nextAssignment();
      expect(again.task.id).toBe(created.body.id);
      await other.accept(again);
      expect(await other.complete(again, 'done')).toMatchObject({ ok: true });
      const done = await api<TaskView>(url(2), 'GET', `/v1/tasks/${created.body.id}`);
      expect(done.body).toMatchObject({ state: 'completed', agentId: other.agentId, attempt: 1 });
      expect(revoked.assignments).toHaveLength(1);
    }
  });

  it('takes a revoked idle agent out of the idle indexes before the revoke answers', async () => {
    const queue = newQueue();
    const agent = await register(0, queue);
    expect((await api(url(1), 'DELETE', `/v1/agents/${agent.agentId}`)).status).toBe(200);
    expect((await api<AgentView>(url(2), 'GET', `/v1/agents/${agent.agentId}`)).body.state).toBe(
      'offline',
    );
    const queues = await api<{ queues: Array<{ name: string; idleAgents: number }> }>(
      url(2),
      'GET',
      '/v1/queues',
    );
    expect(queues.body.queues.find((q) => q.name === queue)?.idleAgents ?? 0).toBe(0);
  });

  it('shows a pending drain of a busy agent in its view until it is lifted', async () => {
    // A drain of an agent that holds a task leaves its state as it is (`working`): the answer and
    // the view said only that, so an operator could not tell a drained agent from another.
    const queue = newQueue();
    const agent = await register(0, queue);
    const created = await api<{ id: string }>(url(1), 'POST', '/v1/tasks', { queue, payload: 1 });
    await agent.accept(await agent.assignmentOf(created.body.id));
    const drained = await api(url(1), 'POST', `/v1/agents/${agent.agentId}/drain`);
    expect(drained.body).toEqual({ agentId: agent.agentId, state: 'working' });
    const view = await api<AgentView>(url(2), 'GET', `/v1/agents/${agent.agentId}`);
    expect(view.body).toMatchObject({ state: 'working', drainRequested: 'operator' });
    const listed = await api<{ agents: AgentView[] }>(url(0), 'GET', '/v1/agents');
    expect(listed.body.agents.find((a) => a.agentId === agent.agentId)).toMatchObject({
      drainRequested: 'operator',
    });
    const resumed = await api(url(2), 'POST', `/v1/agents/${agent.agentId}/resume`);
    expect(resumed.body).toEqual({ agentId: agent.agentId, state: 'working' });
    const after = await api<AgentView>(url(0), 'GET', `/v1/agents/${agent.agentId}`);
    expect(after.body.drainRequested).toBeUndefined();
    // the agent's own drain (its sidecar stopping) is shown as its own
    expect(await agent.send('agent:drain', {})).toMatchObject({ ok: true, state: 'working' });
    expect((await api<AgentView>(url(1), 'GET', `/v1/agents/${agent.agentId}`)).body).toMatchObject(
      {
        drainRequested: 'self',
      },
    );
  });

  it('takes ids of the longest allowed length (128) in a path', async () => {
    const agentId = `a${'x'.repeat(127)}`;
    expect((await api(url(0), 'POST', '/v1/agents', { agentId })).status).toBe(201);
    const shown = await api<{ agentId: string }>(url(1), 'GET', `/v1/agents/${agentId}`);
    expect(shown.status).toBe(200);
    expect(shown.body.agentId).toBe(agentId);
  });

  it('counts tasks and idle agents per queue', async () => {
    const queue = newQueue();
    await register(1, queue);
    await register(2, queue);
    await api(url(0), 'POST', '/v1/tasks', { queue: `${queue}-empty`, payload: 1 });
    const response = await api<{
      queues: Array<{ name: string; counts: Record<string, number>; idleAgents: number }>;
    }>(url(0), 'GET', '/v1/queues');
    expect(response.body.queues).toContainEqual(
      expect.objectContaining({ name: queue, idleAgents: 2 }),
    );
    expect(response.body.queues).toContainEqual(
      expect.objectContaining({
        name: `${queue}-empty`,
        idleAgents: 0,
        counts: expect.objectContaining({ waiting: 1 }),
      }),
    );
    expect((await api(url(0), 'GET', '/v1/queues', undefined, NO_AUTH)).status).toBe(401);
  });

  it('exports metrics whose counters sum to the true totals over 3 replicas, and agent gauges once', async () => {
    const queue = newQueue();
    const before = await Promise.all(
      hubs.map(async (h) =>
        (
          await fetch(`${h.url}/metrics`, {
            headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
          })
        ).text(),
      ),
    );
    const registered = [
      await register(0, queue),
      await register(1, queue),
      await register(2, queue),
    ];
    // each agent completes whatever it is given: how the 6 tasks spread is the dispatcher's call
    let completed = 0;
    for (const agent of registered) {
      agent.on('assign', (msg: TaskAssign) => {
        void (async () => {
          await agent.accept(msg);
          if ((await agent.complete(msg, msg.task.payload)).ok) completed++;
        })();
      });
    }
    for (let i = 0; i < 6; i++) await api(url(i), 'POST', '/v1/tasks', { queue, payload: i });
    await eventually(() => (completed === 6 ? true : undefined), { what: '6 completions' });
    const texts = await Promise.all(
      hubs.map(async (h) =>
        (await fetch(`${h.url}/metrics`, { headers: basic(TEST_ADMIN_KEY) })).text(),
      ),
    );
    const label = `queue="${queue}"`;
    expect(
      sumMetric(texts, 'agentcom_tasks_created_total', label) -
        sumMetric(before, 'agentcom_tasks_created_total', label),
    ).toBe(6);
    expect(sumMetric(texts, 'agentcom_tasks_completed_total', label)).toBe(6);
    expect(sumMetric(texts, 'agentcom_dispatch_latency_seconds_count', label)).toBe(6);
    expect(sumMetric(texts, 'agentcom_task_run_seconds_count', label)).toBe(6);
    expect(sumMetric(texts, 'agentcom_sockets')).toBe(3);
    const listed = await api<{ agents: Array<{ state: string }> }>(url(0), 'GET', '/v1/agents');
    const idleNow = listed.body.agents.filter((a) => a.state === 'idle').length;
    expect(texts.filter((t) => t.includes('agentcom_agents{')).length).toBe(1);
    expect(sumMetric(texts, 'agentcom_agents', 'state="idle"')).toBe(idleNow);
    expect(sumMetric(texts, 'agentcom_queue_tasks', `${label},state="completed"`)).toBe(6);
    expect((await fetch(`${url(0)}/metrics`)).status).toBe(401);
  });

  it('serves Bull Board behind the admin key, listing queues found in Redis', async () => {
    const queue = newQueue();
    await api(url(0), 'POST', '/v1/tasks', { queue, payload: 1 });
    const denied = await fetch(`${url(1)}/admin/queues`);
    expect(denied.status).toBe(401);
    expect(denied.headers.get('www-authenticate')).toMatch(/^Basic/);
    expect(
      (await fetch(`${url(1)}/admin/queues`, { headers: basic('wrong-wrong-wrong') })).status,
    ).toBe(401);
    const page = await fetch(`${url(1)}/admin/queues`, { headers: basic(TEST_ADMIN_KEY) });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<div id="root">');
    // not to be framed by another site (clickjacking its pause, retry and clean buttons)
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('content-security-policy')).toBe("frame-ancestors 'none'");
    const listed = await eventually(
      async () => {
        const response = await fetch(`${url(2)}/admin/queues/api/queues`, {
          headers: basic(TEST_ADMIN_KEY),
        });
        const body = (await response.json()) as { queues: Array<{ name: string }> };
        return body.queues.some((q) => q.name === queue) ? body : undefined;
      },
      { what: 'the new queue on the board of another replica' },
    );
    expect(listed.queues.length).toBeGreaterThan(1);
  });

  it('serves an OpenAPI document generated from the schemas, and a page for it', async () => {
    const doc = await api<{ openapi: string; paths: Record<string, unknown> }>(
      url(0),
      'GET',
      '/docs/openapi.json',
      undefined,
      NO_AUTH,
    );
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        '/v1/tasks',
        '/v1/tasks/{id}/cancel',
        '/v1/agents/{id}/drain',
        '/v1/queues',
      ]),
    );
    expect(JSON.stringify(doc.body.paths['/v1/tasks'])).toContain('idempotencyKey');
    const page = await fetch(`${url(0)}/docs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('/docs/openapi.json');
  });
});

describe('revoking an agent whose replica does not hear the disconnect (pub/sub lost it)', () => {
  // Redis pub/sub delivers at most once: the replica holding the agent's connection can miss the
  // revoke's disconnect (its subscriber reconnecting). Here it is deaf for good: its adapter's
  // subscriptions are dropped, so its agent stays connected after the revoke.
  const fixture = useTestHub({ hubIds: ['deaf', 'hearing'] });
  const { agents } = fixture;
  const register = async (hub: TestHub, queue: string) => {
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    return agent;
  };
  beforeAll(() => {
    const { sub } = fixture.hubs[0].redis;
    sub.removeAllListeners('pmessageBuffer');
    sub.removeAllListeners('messageBuffer');
  });

  it('takes the revoked agent out of dispatch and refuses the report of its old connection', async () => {
    const [deaf, hearing] = fixture.hubs;
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const revoked = await register(deaf, queue);
    // created where the agent is: the deaf replica would not hear another's word of it
    const held = await api<{ id: string }>(deaf.url, 'POST', '/v1/tasks', { queue, payload: 1 });
    const msg = await revoked.assignmentOf(held.body.id);
    expect(await revoked.accept(msg)).toMatchObject({ ok: true });
    expect((await api(hearing.url, 'DELETE', `/v1/agents/${revoked.agentId}`)).status).toBe(200);
    expect(revoked.socket.connected).toBe(true); // the disconnect never reached it
    // the task it held waits for another agent
    const task = await api<TaskView>(hearing.url, 'GET', `/v1/tasks/${held.body.id}`);
    expect(task.body).toMatchObject({ state: 'waiting', attemptsMade: 0 });
    const view = await api<AgentView>(hearing.url, 'GET', `/v1/agents/${revoked.agentId}`);
    expect(view.body.state).toBe('offline');
    // the next task goes to a live agent, never to the revoked one, still connected
    const other = await register(hearing, queue);
    const next = await other.nextAssignment();
    expect(next.task.id).toBe(held.body.id);
    expect(revoked.assignments).toHaveLength(1);
    // its report of the task it held: refused (its token is gone), and its connection ended
    const closed = revoked.disconnected();
    expect(await revoked.complete(msg, 'from a revoked agent')).toMatchObject({
      ok: false,
      code: 'E_UNAUTHORIZED',
    });
    expect(await closed).toBe('io server disconnect');
    expect(
      (await api<TaskView>(hearing.url, 'GET', `/v1/tasks/${held.body.id}`)).body.state,
    ).not.toBe('completed');
  });
});

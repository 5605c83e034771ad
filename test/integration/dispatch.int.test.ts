import { randomBytes } from 'node:crypto';
import { CLIENT_EVENTS, type TaskView } from '@agentcom/shared';
import { Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createLogger } from '../../hub/src/logger';
import { RedisKeys } from '../../hub/src/redis/keys';
import { allowHubEveryKey, becomeAclAdmin, refuseKeyToHub } from '../helpers/acl';
import { commandCalls } from '../helpers/commandstats';
import { freshAgentAssigned, registerFreshAgent } from '../helpers/fresh-agent';
import { testQueueRegistry } from '../helpers/hub-parts';
import { TEST_ADMIN_KEY, api, eventually, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

describe('dispatch across replicas (in-process hubs, real Redis, real sockets)', () => {
  const fixture = useTestHub({ hubIds: ['hub-a', 'hub-b'] });
  const { agents } = fixture;
  let redis: RedisProcess;
  let hubA: TestHub;
  let hubB: TestHub;
  beforeAll(
    () =>
      ({
        redis,
        hubs: [hubA, hubB],
      } = fixture),
  );

  const register = (hubUrl: string, queue: string): Promise<TestAgent> =>
    registerFreshAgent(agents, hubUrl, queue);
  const newQueue = (): string => `q-${randomBytes(4).toString('hex')}`;
  const createTask = async (hubUrl: string, body: Record<string, unknown>): Promise<string> => {
    const created = await api<{ id: string }>(hubUrl, 'POST', '/v1/tasks', body);
    expect(created.status).toBe(201);
    return created.body.id;
  };
  /** A new agent of a new queue on `agentHub`, working on a task created through `createHub`. */
  const workingOnTask = async (agentHub: string, createHub = agentHub, payload: unknown = {}) => {
    const queue = newQueue();
    const agent = await register(agentHub, queue);
    const assigned = agent.nextAssignment();
    const id = await createTask(createHub, { queue, payload });
    const msg = await assigned;
    await agent.accept(msg);
    return { queue, agent, id, msg };
  };
  const getTask = async (hubUrl: string, id: string): Promise<TaskView> =>
    (await api<TaskView>(hubUrl, 'GET', `/v1/tasks/${id}`)).body;
  const taskInState = (hubUrl: string, id: string, state: TaskView['state']) =>
    eventually(
      async () => {
        const task = await getTask(hubUrl, id);
        return task.state === state ? task : undefined;
      },
      { what: `task ${id} ${state}` },
    );

  it('runs a task submitted to replica B on an agent connected to replica A; both replicas show the result', async () => {
    const queue = newQueue();
    const agent = await register(hubA.url, queue);
    const assigned = agent.nextAssignment();
    const id = await createTask(hubB.url, { queue, payload: { n: 21 } });
    const msg = await assigned;
    expect(msg.task).toMatchObject({ id, queue, payload: { n: 21 } });
    expect(msg.attempt).toBe(1);
    expect(await agent.accept(msg)).toMatchObject({ ok: true, state: 'working' });
    expect((await getTask(hubB.url, id)).state).toBe('running');
    expect(await agent.complete(msg, { doubled: 42 })).toEqual({ ok: true });
    for (const hub of [hubA, hubB]) {
      expect(await getTask(hub.url, id)).toMatchObject({
        state: 'completed',
        result: { doubled: 42 },
        attempt: 1,
      });
    }
    const view = await api<{ state: string; tasksDone: number }>(
      hubB.url,
      'GET',
      `/v1/agents/${agent.agentId}`,
    );
    expect(view.body).toMatchObject({ state: 'idle', tasksDone: 1 });
    // the plain completion took the one-script path (completeAtOnce.lua) on the agent's replica
    const metrics = await (
      await fetch(`${hubA.url}/metrics`, { headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` } })
    ).text();
    expect(metrics).toContain(`agentcom_completions_at_once_total{queue="${queue}",hub="hub-a"} 1`);
  });

  it('pushes a task to the connection the claimed record names, not to a connection of the agent another replica still holds', async () => {
    const queue = newQueue();
    const agent = await register(hubB.url, queue);
    // Replica A still holds a connection in the agent's room, as it does with an older connection
    // of the agent whose replacement on B has not reached it yet; a bystander's socket joined to
    // the room stands in for it (the room's state is the same).
    const bystander = await register(hubA.url, newQueue());
    const held = hubA.gateway.nsp.sockets.get(bystander.socket.id ?? '');
    expect(held).toBeDefined();
    await held?.join(`agent:${agent.agentId}`);

    const assigned = agent.nextAssignment(5000);
    const id = await createTask(hubA.url, { queue, payload: {} });
    const msg = await assigned;
    expect(msg.task.id).toBe(id);
    expect(await agent.accept(msg)).toMatchObject({ ok: true, state: 'working' });
    // a round trip on the held connection after the push: anything sent to it arrived first
    expect(await bystander.send('agent:heartbeat', {})).toMatchObject({ ok: true });
    expect(bystander.assignments).toEqual([]);
  });

  it('rejects a superseded token without changing anything and acknowledges a replayed completion once', async () => {
    const { agent, id, msg } = await workingOnTask(hubA.url);
    const stale = await agent.send('task:complete', {
      taskId: id,
      token: `${agent.agentId}:not-the-token`,
      result: 1,
    });
    expect(stale).toMatchObject({ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' });
    expect((await getTask(hubA.url, id)).state).toBe('running');

    expect(
      await agent.send('task:complete', { taskId: id, token: msg.token, result: 'first' }),
    ).toEqual({ ok: true });
    expect(
      await agent.send('task:complete', { taskId: id, token: msg.token, result: 'replay' }),
    ).toEqual({
      ok: true,
      duplicate: true,
    });
    const task = await getTask(hubB.url, id);
    expect(task).toMatchObject({ state: 'completed', result: 'first' });
    const agentView = await api<{ tasksDone: number; state: string }>(
      hubA.url,
      'GET',
      `/v1/agents/${agent.agentId}`,
    );
    expect(agentView.body).toMatchObject({ tasksDone: 1, state: 'idle' });
  });

  it("a completion BullMQ refuses (the job finished under another token) leaves the task's finished record as it was; its replay is refused too", async () => {
    const { queue, agent, id, msg } = await workingOnTask(hubA.url);
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    try {
      // as after a partition: the job went on without this agent, whose record still names it
      const other = `${agent.agentId}-rescuer:token`;
      await connection.set(hubA.keys.finished(id), `completed ${other}`, 'PX', 60_000);
      await connection.del(hubA.keys.bullLock(queue, id));
      for (const attempt of ['late', 'replay']) {
        expect(
          await agent.send('task:complete', { taskId: id, token: msg.token, result: attempt }),
        ).toMatchObject({ ok: false, code: 'E_ASSIGNMENT_SUPERSEDED' });
        expect(await connection.get(hubA.keys.finished(id))).toBe(`completed ${other}`);
      }
      expect(await connection.get(hubA.keys.reporting(id))).toBeNull();
    } finally {
      await connection.quit();
    }
  });

  it('completes the task of an agent asked to drain while it worked, and leaves the agent draining', async () => {
    const { queue, agent, id, msg } = await workingOnTask(hubA.url);
    const drained = await api(hubB.url, 'POST', `/v1/agents/${agent.agentId}/drain`);
    expect(drained.status).toBe(200);
    const waiting = await createTask(hubA.url, { queue, payload: 'not for a draining agent' });
    // completeAtOnce completes the job, then finds the record not the plain one: released anew
    expect(await agent.complete(msg, 'done')).toEqual({ ok: true });
    expect(await getTask(hubB.url, id)).toMatchObject({ state: 'completed', result: 'done' });
    const view = await api<{ state: string; tasksDone: number }>(
      hubA.url,
      'GET',
      `/v1/agents/${agent.agentId}`,
    );
    expect(view.body).toMatchObject({ state: 'draining', tasksDone: 1 });
    expect((await getTask(hubA.url, waiting)).state).toBe('waiting');
    expect(agent.assignments).toHaveLength(1);
  });

  it('retries a failing task with backoff up to its attempts, then fails it with the handler error', async () => {
    const queue = newQueue();
    const agent = await register(hubB.url, queue);
    const id = await createTask(hubA.url, {
      queue,
      payload: {},
      attempts: 3,
      backoff: { type: 'fixed', delayMs: 300 },
    });
    const seen: Array<{ attempt: number; at: number }> = [];
    for (let i = 1; i <= 3; i++) {
      const msg = await agent.assignmentOf(id, i);
      seen.push({ attempt: msg.attempt, at: Date.now() });
      await agent.accept(msg);
      const ack = await agent.fail(msg, { error: `boom ${i}`, retryable: true });
      expect(ack).toEqual({ ok: true });
    }
    expect(seen.map((s) => s.attempt)).toEqual([1, 2, 3]);
    expect((seen[1]?.at ?? 0) - (seen[0]?.at ?? 0)).toBeGreaterThanOrEqual(250);
    const task = await taskInState(hubB.url, id, 'failed');
    expect(task).toMatchObject({ error: 'boom 3', attemptsMade: 3 });
  });

  it('drops a rest that ended while the agent was away when it connects again (time and index entry)', async () => {
    const queue = newQueue();
    const limited = await register(hubA.url, queue);
    const first = limited.nextAssignment();
    await createTask(hubA.url, { queue, payload: {}, attempts: 1 });
    const msg = await first;
    const until = Date.now() + 300;
    expect(
      await limited.fail(msg, { error: 'quota', retryable: true, rateLimitedUntil: until }),
    ).toEqual({ ok: true });
    // away before the rest ends: offline, the rest's time and entry kept
    const gone = limited.disconnected();
    limited.close();
    await gone;
    const offline = await eventually(async () => {
      const record = await hubA.agents.get(limited.agentId);
      return record?.state === 'offline' ? record : undefined;
    });
    expect(offline.cooldownUntil).toBe(until);
    await eventually(async () => (Date.now() > until + 50 ? true : undefined), {
      what: 'the rest to end',
    });
    const back = await limited.reconnectTo(hubB.url);
    agents.push(back);
    // the replica records the connection once its handshake is done: the client may hear first
    const record = await eventually(async () => {
      const read = await hubB.agents.get(limited.agentId);
      return read?.state !== 'offline' ? read : undefined;
    });
    // idle, or handed at once the task still waiting: not resting
    expect(['idle', 'assigned']).toContain(record.state);
    expect(record.cooldownUntil).toBeUndefined();
    expect(await hubB.redis.command.zscore(hubB.keys.cooldowns, limited.agentId)).toBeNull();
  });

  it('resumes a task when the agent reconnects to another replica within the lease', async () => {
    const working = await workingOnTask(hubA.url);
    const { id, msg } = working;
    const agent = await working.agent.reconnectTo(hubB.url);
    agents.push(agent);
    expect(await agent.send('agent:heartbeat', { taskId: id, token: msg.token })).toEqual({
      ok: true,
      state: 'working',
      hubId: 'hub-b',
    });
    expect(await agent.complete(msg, 'after reconnect')).toEqual({ ok: true });
    expect(await getTask(hubA.url, id)).toMatchObject({
      state: 'completed',
      result: 'after reconnect',
      attempt: 1,
    });
    expect(agent.assignments).toHaveLength(0);
  });

  it('puts a task back when its agent does not accept in time and gives it to another agent', async () => {
    const queue = newQueue();
    const silent = await register(hubA.url, queue);
    const first = silent.nextAssignment();
    const id = await createTask(hubA.url, { queue, payload: {} });
    expect((await first).task.id).toBe(id);
    const other = await register(hubB.url, queue);
    const second = await other.nextAssignment(10_000);
    expect(second.task.id).toBe(id);
    await other.accept(second);
    expect(await other.complete(second, 'ok')).toEqual({ ok: true });
    expect(await getTask(hubA.url, id)).toMatchObject({ state: 'completed', result: 'ok' });
  });

  it.each([
    ['after accepting it', true],
    // a client may refuse a task it knows it cannot run (over its quota) without accepting it
    ['before accepting it', false],
  ])(
    'puts an agent that reports a rate limit %s in cooldown and its task back without using an attempt',
    async (_, accepts) => {
      const queue = newQueue();
      const limited = await register(hubA.url, queue);
      const first = limited.nextAssignment();
      const id = await createTask(hubA.url, { queue, payload: {}, attempts: 1 });
      const msg = await first;
      if (accepts) await limited.accept(msg);
      const helper = await register(hubB.url, queue);
      const next = helper.nextAssignment();
      const ack = await limited.fail(msg, {
        error: 'quota',
        retryable: true,
        rateLimitedUntil: Date.now() + 1500,
      });
      expect(ack).toEqual({ ok: true });
      const view = await api<{ state: string }>(hubB.url, 'GET', `/v1/agents/${limited.agentId}`);
      expect(view.body.state).toBe('cooldown');
      const retried = await next;
      expect(retried.task.id).toBe(id);
      await helper.accept(retried);
      await helper.complete(retried, 'done');
      // attempts: 1 and still completed: the rate-limited run did not use the only attempt
      expect(await getTask(hubA.url, id)).toMatchObject({
        state: 'completed',
        attemptsMade: 1,
        attempts: 1,
      });
      await eventually(
        async () => {
          const v = await api<{ state: string }>(hubA.url, 'GET', `/v1/agents/${limited.agentId}`);
          return v.body.state === 'idle' ? true : undefined;
        },
        { what: 'cooldown to end' },
      );
    },
  );

  it('puts a task back without using an attempt for a rate limit already over, with no rest', async () => {
    // the agent's clock behind the hub's, or a report its sidecar delivered late
    const queue = newQueue();
    const limited = await register(hubA.url, queue);
    const first = limited.nextAssignment();
    const id = await createTask(hubA.url, { queue, payload: {}, attempts: 1 });
    const msg = await first;
    await limited.accept(msg);
    const again = limited.nextAssignment();
    expect(
      await limited.fail(msg, {
        error: 'quota',
        retryable: true,
        rateLimitedUntil: Date.now() - 2000,
      }),
    ).toEqual({ ok: true });
    // idle at once, alone in its queue: the task comes back to it
    const retried = await again;
    expect(retried).toMatchObject({ task: { id }, attempt: 1 });
    expect(retried.token).not.toBe(msg.token);
    await limited.accept(retried);
    expect(await limited.complete(retried, 'done')).toEqual({ ok: true });
    expect(await getTask(hubA.url, id)).toMatchObject({
      state: 'completed',
      attemptsMade: 1,
      attempts: 1,
    });
  });

  it('rests an agent at most a week for a rate limit reported too far ahead', async () => {
    const queue = newQueue();
    const limited = await register(hubA.url, queue);
    const first = limited.nextAssignment();
    await createTask(hubA.url, { queue, payload: {} });
    const msg = await first;
    const before = Date.now();
    // microseconds sent for milliseconds: about 55,000 years
    expect(
      await limited.fail(msg, { error: 'quota', retryable: true, rateLimitedUntil: before * 1000 }),
    ).toEqual({ ok: true });
    const record = await hubA.agents.get(limited.agentId);
    const week = 7 * 24 * 60 * 60 * 1000;
    expect(record?.state).toBe('cooldown');
    expect(record?.cooldownUntil).toBeGreaterThanOrEqual(before + week);
    expect(record?.cooldownUntil).toBeLessThanOrEqual(Date.now() + week);
  });

  it('fails a task an operator cancelled as cancelled when its agent then reports a rate limit', async () => {
    const { agent, id, msg } = await workingOnTask(hubA.url);
    const cancel = await api(hubA.url, 'POST', `/v1/tasks/${id}/cancel`, { reason: 'stop' });
    expect(cancel.status).toBe(202);
    // the agent's report crosses the cancel: its quota does not put the task back to wait
    expect(
      await agent.fail(msg, {
        error: 'quota',
        retryable: true,
        rateLimitedUntil: Date.now() + 60_000,
      }),
    ).toEqual({ ok: true });
    expect(await getTask(hubA.url, id)).toMatchObject({ state: 'cancelled' });
    expect(await hubA.agents.get(agent.agentId)).toMatchObject({ state: 'cooldown' });
  });

  describe('handshake and payload validation', () => {
    it('refuses a wrong token with E_UNAUTHORIZED', async () => {
      const agent = new TestAgent(hubA.url, 'nobody', 'agc_wrong');
      agents.push(agent);
      await expect(agent.connect()).rejects.toMatchObject({ data: { code: 'E_UNAUTHORIZED' } });
    });

    it('refuses an unknown protocol version with E_PROTOCOL_VERSION', async () => {
      const created = await api<{ token: string }>(hubA.url, 'POST', '/v1/agents', {
        agentId: 'proto-agent',
      });
      const agent = new TestAgent(hubA.url, 'proto-agent', created.body.token, ['default'], {
        protocol: 99,
      });
      agents.push(agent);
      await expect(agent.connect()).rejects.toMatchObject({ data: { code: 'E_PROTOCOL_VERSION' } });
    });

    it('refuses a label keyed __proto__ with E_VALIDATION naming it, where it used to vanish', async () => {
      const created = await api<{ token: string }>(hubA.url, 'POST', '/v1/agents', {
        agentId: 'proto-label-agent',
      });
      const labels = JSON.parse('{"__proto__":"x","team":"a"}') as Record<string, string>;
      const agent = new TestAgent(hubA.url, 'proto-label-agent', created.body.token, ['default'], {
        labels,
      });
      agents.push(agent);
      await expect(agent.connect()).rejects.toMatchObject({
        data: { code: 'E_VALIDATION', message: expect.stringContaining('__proto__') as unknown },
      });
    });

    it('answers a malformed payload on every client event with E_VALIDATION and keeps serving', async () => {
      const queue = newQueue();
      const agent = await register(hubA.url, queue);
      const bad: unknown[] = [
        null,
        42,
        'x',
        [],
        { taskId: 5 },
        { taskId: 'a', token: 'b', extra: true },
      ];
      for (const event of CLIENT_EVENTS) {
        for (const payload of bad) {
          const ack = await agent.send(event, payload);
          expect(ack).toMatchObject({ ok: false, code: 'E_VALIDATION' });
        }
      }
      expect(await agent.send('no:such:event' as never, {})).toMatchObject({
        ok: false,
        code: 'E_VALIDATION',
      });
      const assigned = agent.nextAssignment();
      const id = await createTask(hubA.url, { queue, payload: 'still serving' });
      const msg = await assigned;
      await agent.accept(msg);
      expect(await agent.complete(msg, 'fine')).toEqual({ ok: true });
      expect((await getTask(hubA.url, id)).state).toBe('completed');
    });
  });

  it("puts a task back when the working agent's heartbeats twice in a row name no task", async () => {
    const { agent, id, msg: assignment } = await workingOnTask(hubA.url, hubB.url);
    // the sidecar gave the task up without telling (its accept looked unanswered, say)
    expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'working' });
    expect((await getTask(hubA.url, id)).state).toBe('running'); // one such heartbeat: no action
    const again = agent.nextAssignment();
    expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true });
    const second = await again;
    expect(second.task.id).toBe(id);
    expect(second.token).not.toBe(assignment.token);
    expect(second.attempt).toBe(1); // not run, so no attempt used
    expect((await hubA.agents.get(agent.agentId))?.taskId).toBe(id);
  });

  it('shows the attempt of the holder it names, though the job moved on after it was loaded', async () => {
    const prefix = `d${randomBytes(3).toString('hex')}`;
    const hub = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-f' });
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = newQueue();
    const bull = new Queue(queue, { connection, prefix: hub.keys.bullPrefix });
    const worker = new Worker(queue, null, {
      connection,
      prefix: hub.keys.bullPrefix,
      autorun: false,
    });
    try {
      await hub.dispatcher?.stop();
      const id = await createTask(hub.url, { queue, payload: {} });
      const first = await worker.getNextJob('first-agent:t1', { block: false });
      const loaded = await Job.fromId(bull, id); // a view starts from the hash, as of now
      // the first holder's attempt failed (the job back to wait for its retry); another agent
      // fetched the job for attempt 2
      await first?.moveToFailed(new Error('attempt 1 failed'), 'first-agent:t1');
      await worker.getNextJob('rescuer:t2', { block: false });
      const view = await hub.tasks.view(loaded as never);
      expect(view).toMatchObject({ state: 'running', agentId: 'rescuer', attempt: 2 });
    } finally {
      await worker.close();
      await bull.close();
      await connection.quit();
      await hub.close();
    }
  });

  it('cancels a task whose cancel was asked while it ran, when a dispatch step fetches it again', async () => {
    const { queue, agent: first, id, msg } = await workingOnTask(hubA.url);
    const cancel = await api(hubA.url, 'POST', `/v1/tasks/${id}/cancel`, { reason: 'stop' });
    expect(cancel.status).toBe(202);
    first.close();
    // the job comes back to wait, as after a lost lease, with the cancel request still there
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const bull = new Queue(queue, { connection, prefix: hubA.keys.bullPrefix });
    try {
      await (await bull.getJob(id))?.moveToWait(msg.token);
    } finally {
      await bull.close();
      await connection.quit();
    }
    // the next step fetches it (claimAndFetch leaves it unrecorded) and fails it as cancelled
    const second = await register(hubB.url, queue);
    const task = await taskInState(hubA.url, id, 'cancelled');
    expect(task.error).toContain('stop');
    expect(second.assignments).toHaveLength(0);
    // the claimed agent is free again and takes the next task
    const next = second.nextAssignment();
    const nextId = await createTask(hubA.url, { queue, payload: {} });
    expect((await next).task.id).toBe(nextId);
  });

  it("a stopped dispatcher puts back the job a report's dispatch step fetched and frees the agent", async () => {
    const prefix = `d${randomBytes(3).toString('hex')}`;
    const hub = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-e' });
    try {
      await hub.dispatcher?.stop();
      const queue = newQueue();
      const agent = await register(hub.url, queue);
      const id = await createTask(hub.url, { queue, payload: {} });
      const step = await hub.agents.claimAndFetch(queue, 60_000, 60_000);
      expect(step).toMatchObject({ outcome: 'assigned', claim: { agentId: agent.agentId } });
      hub.dispatcher?.continueClaim(step!);
      await eventually(
        async () => ((await hub.agents.get(agent.agentId))?.state === 'idle' ? true : undefined),
        { what: 'the claimed agent idle again' },
      );
      expect((await getTask(hub.url, id)).state).toBe('waiting');
      expect((await hub.agents.get(agent.agentId))?.taskId).toBeUndefined();
    } finally {
      await hub.close();
    }
  });

  it('puts back a job that a replica fetched for a claimed agent but died before recording', async () => {
    // A replica whose dispatcher stops between claim + fetch and the record: the test plays it,
    // with the claim script and BullMQ's fetch, against a hub whose own dispatcher is stopped.
    const prefix = `d${randomBytes(3).toString('hex')}`;
    const hub = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-c' });
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = newQueue();
    const worker = new Worker(queue, null, {
      connection,
      prefix: hub.keys.bullPrefix,
      autorun: false,
    });
    try {
      await hub.dispatcher?.stop();
      const agent = await register(hub.url, queue);
      const id = await createTask(hub.url, { queue, payload: {} });
      const claim = await hub.agents.claimIdle(queue, 2000);
      expect(claim?.agentId).toBe(agent.agentId);
      const job = await worker.getNextJob(claim?.token ?? '', { block: false });
      expect(job?.id).toBe(id);
      expect(['assigned', 'running']).toContain((await getTask(hub.url, id)).state); // held
      // the ack deadline (2 s) passes: the sweeper finds the job by its lock and requeues it
      await taskInState(hub.url, id, 'waiting');
      expect(await connection.get(hub.keys.bullLock(queue, id))).toBeNull();
      const record = await hub.agents.get(agent.agentId);
      expect(record?.state).toBe('idle');
      expect(record?.token).toBeUndefined();
    } finally {
      await worker.close();
      await connection.quit();
      await hub.close();
    }
  });
});

describe('a completion that Redis refuses for a reason other than a superseded assignment', () => {
  it('keeps its intent and changes nothing else; its replay completes the task once Redis takes it', async () => {
    // Redis refuses the job's hash to the hub's user (ACL): BullMQ's moveToFinished fails at its
    // first command, before any write, with NOPERM. As far as the hub can tell BullMQ may have
    // completed the job and lost the reply, so the intent must stay for the replay to read.
    const redis = await startRedis();
    const prefix = `d${randomBytes(3).toString('hex')}`;
    const hub = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix, HUB_ID: 'hub-f' });
    const admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    const agents: TestAgent[] = [];
    try {
      await becomeAclAdmin(admin);
      const { agent, queue, id, assignment: msg } = await freshAgentAssigned(agents, hub.url);
      expect(await agent.accept(msg)).toMatchObject({ ok: true });

      const jobKey = hub.keys.bullJob(queue, id);
      await refuseKeyToHub(admin, jobKey);
      const complete = { taskId: id, token: msg.token, result: { n: 1 } };
      // the one-script completion, then the step-by-step path of its replay: both refused
      for (let attempt = 0; attempt < 2; attempt++) {
        expect(await agent.send('task:complete', complete)).toMatchObject({
          ok: false,
          code: 'E_INTERNAL',
        });
      }
      expect(await admin.get(hub.keys.finished(id))).toBe(`completing ${msg.token} ${queue}`);
      expect(await admin.get(hub.keys.reporting(id))).toBeNull();
      expect(await admin.hmget(hub.keys.agent(agent.agentId), 'state', 'taskId')).toEqual([
        'working',
        id,
      ]);
      expect(await admin.hget(jobKey, 'finishedOn')).toBeNull();
      expect(await admin.get(hub.keys.bullLock(queue, id))).toBe(msg.token);

      await allowHubEveryKey(admin);
      expect(await agent.send('task:complete', complete)).toEqual({ ok: true });
      const task = (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
      expect(task).toMatchObject({ state: 'completed', result: { n: 1 }, agentId: agent.agentId });
      expect(await admin.get(hub.keys.finished(id))).toBe(`completed ${msg.token}`);
      expect(await admin.hmget(hub.keys.agent(agent.agentId), 'state', 'tasksDone')).toEqual([
        'idle',
        '1',
      ]);
    } finally {
      for (const agent of agents) agent.close();
      await admin.quit();
      await hub.close();
      await redis.dispose();
    }
  });
});

describe('queues an agent names', () => {
  it('opens nothing for a queue no task was added to (a made-up name costs no replica a connection); a task added later reaches the agent', async () => {
    const redis = await startRedis();
    const hub = await startTestHub(redis.url);
    const admin = new Redis(redis.url);
    let agent: TestAgent | undefined;
    try {
      const clients = async () =>
        ((await admin.client('LIST')) as string).trim().split('\n').length;
      const clientsBefore = await clients();
      const existsBefore = await commandCalls(admin, 'exists');
      const names = Array.from({ length: 32 }, (_, i) => `made-up-${i}`);
      agent = await TestAgent.register(hub.url, 'namer', names);
      // the agent's idle transition triggers a dispatch step for each of its queues
      await eventually(
        async () =>
          (await commandCalls(admin, 'exists')) >= existsBefore + names.length ||
          (await admin.scard(hub.keys.queues)) > 0 ||
          undefined,
        { what: 'a dispatch step per named queue' },
      );
      expect(await admin.smembers(hub.keys.queues)).toEqual([]);
      expect(await clients()).toBeLessThan(clientsBefore + 4); // the agent's socket opens none

      const assigned = agent.nextAssignment();
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue: 'made-up-7',
        payload: {},
      });
      expect((await assigned).task.id).toBe(created.body.id);
      expect(await admin.smembers(hub.keys.queues)).toEqual(['made-up-7']);
      // still listed with its idle agents, without being opened
      const listed = await api<{ queues: Array<{ name: string; idleAgents: number }> }>(
        hub.url,
        'GET',
        '/v1/queues',
      );
      expect(listed.body.queues).toContainEqual(
        expect.objectContaining({ name: 'made-up-3', idleAgents: 0 }),
      );
    } finally {
      agent?.close();
      admin.disconnect();
      await hub.close();
      await redis.dispose();
    }
  });
});

describe('the safety tick', () => {
  it('hands out a delayed task once it is due, every second at most, whatever SWEEP_MS is', async () => {
    const redis = await startRedis();
    // a sweep a minute: the tick used to run after each sweep only
    const hub = await startTestHub(redis.url, { SWEEP_MS: '60000' });
    let agent: TestAgent | undefined;
    try {
      const queue = `q-${randomBytes(4).toString('hex')}`;
      agent = await TestAgent.register(hub.url, 'patient', [queue]);
      const assigned = agent.nextAssignment(10_000);
      const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', {
        queue,
        payload: {},
        delayMs: 300,
      });
      expect(created.status).toBe(201);
      expect((await assigned).task.id).toBe(created.body.id);
    } finally {
      agent?.close();
      await hub.close();
      await redis.dispose();
    }
  });
  it('shows a delayed task waiting once it is due, while every agent is busy', async () => {
    const redis = await startRedis();
    const hub = await startTestHub(redis.url);
    let agent: TestAgent | undefined;
    try {
      const queue = `q-${randomBytes(4).toString('hex')}`;
      agent = await TestAgent.register(hub.url, 'busy', [queue]);
      const first = agent.nextAssignment();
      await api(hub.url, 'POST', '/v1/tasks', { queue, payload: 'first' });
      const busyWith = await first;
      expect((await agent.accept(busyWith)).ok).toBe(true);
      const delayed = await api<{ id: string; state: string }>(hub.url, 'POST', '/v1/tasks', {
        queue,
        payload: 'due soon',
        delayMs: 300,
      });
      expect(delayed.body.state).toBe('delayed');
      // BullMQ promotes a due job only when one is fetched, and nothing is fetched for a busy
      // agent: the tick promotes it, so the API and the queue's counts show the backlog
      await eventually(
        async () => {
          const view = await api<{ state: string }>(hub.url, 'GET', `/v1/tasks/${delayed.body.id}`);
          return view.body.state === 'waiting' ? true : undefined;
        },
        { timeoutMs: 5000, what: 'the due task shown waiting' },
      );
      const listed = await api<{
        queues: Array<{ name: string; counts: Record<string, number> }>;
      }>(hub.url, 'GET', '/v1/queues');
      expect(listed.body.queues.find((q) => q.name === queue)?.counts).toMatchObject({
        waiting: 1,
        delayed: 0,
      });
      // and it is handed out as any waiting task once the agent is free
      const next = agent.nextAssignment();
      expect((await agent.complete(busyWith, 'done')).ok).toBe(true);
      expect((await next).task.id).toBe(delayed.body.id);
    } finally {
      agent?.close();
      await hub.close();
      await redis.dispose();
    }
  });
  it('promotes every due task when another replica promotes the same ones at once (BullMQ refuses the second promote of each)', async () => {
    const redis = await startRedis();
    const keys = new RedisKeys(`d${randomBytes(3).toString('hex')}`);
    const logger = createLogger({ level: 'silent', hubId: 'hub-t' });
    const admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    // two replicas' registries, each on a connection of its own
    const connections = [0, 1].map(() => new Redis(redis.url, { maxRetriesPerRequest: null }));
    const registries = connections.map((connection) => testQueueRegistry(connection, keys, logger));
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const producer = new Queue(queue, { connection: admin, prefix: keys.bullPrefix });
    try {
      // due only for the `now` the test passes below, never for real time
      const jobs = await Promise.all(
        [1, 2, 3, 4, 5].map((n) => producer.add(`t${n}`, {}, { delay: 60_000 })),
      );
      for (const registry of registries) await registry.get(queue);
      const loadsBefore = await commandCalls(admin, 'hgetall');

      // both read the same due ids before either promotes (the reads go out together)
      const later = Date.now() + 120_000;
      await expect(
        Promise.all(registries.map((registry) => registry.promoteDue(later))),
      ).resolves.toEqual([undefined, undefined]);

      expect(await producer.getJobCounts('delayed', 'wait')).toEqual({ delayed: 0, wait: 5 });
      // each replica loaded each job (one HGETALL each) and so promoted it: one of the two
      // promotes of each job was refused
      expect((await commandCalls(admin, 'hgetall')) - loadsBefore).toBe(2 * jobs.length);
      // what the refused ones met: BullMQ refuses the promote of a job no longer delayed
      await expect(jobs[0]?.promote()).rejects.toThrow(/not in the delayed state/);
    } finally {
      for (const registry of registries) await registry.close();
      await producer.close();
      for (const connection of [...connections, admin]) await connection.quit();
      await redis.dispose();
    }
  });
});

import { randomBytes } from 'node:crypto';
import type { AgentView, TaskView } from '@agentcom/shared';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import type { AgentStore } from '../../hub/src/fsm/agent-store';
import { hashToken } from '../../hub/src/auth/tokens';
import { STALE_TOKENS_EVENT } from '../../hub/src/gateway/agent-gateway';
import type { Hub } from '../../hub/src/hub';
import { api, eventually, startTestHub } from '../helpers/hub';
import { startRedisProxy, type RedisProxy } from '../helpers/redis-proxy';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

const REVOKED = { code: 'E_UNAUTHORIZED', message: 'the agent token was revoked or replaced' };

/**
 * Two replicas on one private Redis: `near` reaches it through a TCP proxy (which can hold one of
 * its connections: its Socket.IO adapter subscriber, or the connection a registration runs on),
 * `far` directly.
 */
describe('agent tokens: fenced reports, atomic registration', () => {
  let redis: RedisProcess;
  let proxy: RedisProxy;
  let direct: Redis;
  const hubs: Array<Hub & { url: string }> = [];
  const agents: TestAgent[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    proxy = await startRedisProxy(redis.port);
    direct = new Redis(redis.url);
  });
  afterEach(async () => {
    for (const agent of agents.splice(0)) agent.close();
    // what a test still holds goes on, so that the replicas stop as usual
    for (const held of [...proxy.named('agentcom:sub'), ...proxy.named('agentcom:command')]) {
      held.release();
    }
    for (const hub of hubs.splice(0)) await hub.close();
  });
  afterAll(async () => {
    direct.disconnect();
    await proxy.close();
    await redis.dispose();
  });

  async function replicas(): Promise<{ near: Hub & { url: string }; far: Hub & { url: string } }> {
    const env = { AGENTCOM_PREFIX: `f${randomBytes(3).toString('hex')}`, AUTH_FAIL_LIMIT: '1000' };
    const near = await startTestHub(proxy.url, env);
    hubs.push(near);
    const far = await startTestHub(redis.url, env);
    hubs.push(far);
    return { near, far };
  }

  describe("a connection whose token was rotated, on a replica that missed the rotation's message", () => {
    /**
     * An agent connected to `near` with its first token, holding a pushed task (accepted unless
     * `accept` is false), having done `beforeRotation` then; then `near`'s adapter subscriber is
     * cut off (what Redis sends it is held at the proxy) and the token rotated through `far`. The
     * rotation's disconnect is published (seen held on its way to `near`), so the old connection
     * stays open.
     */
    async function rotatedUnderfoot(
      accept: boolean,
      beforeRotation?: (agent: TestAgent) => Promise<void>,
    ) {
      const { near, far } = await replicas();
      const agentId = `fenced-${randomBytes(3).toString('hex')}`;
      const queue = `q-${randomBytes(3).toString('hex')}`;
      const created = await api<{ token: string }>(far.url, 'POST', '/v1/agents', { agentId });
      expect(created.status).toBe(201);
      const agent = new TestAgent(near.url, agentId, created.body.token, [queue]);
      agents.push(agent);
      await agent.connect();
      const pushed = agent.nextAssignment();
      await api(near.url, 'POST', '/v1/tasks', { queue, payload: {} });
      const msg = await pushed;
      if (accept) expect(await agent.accept(msg)).toMatchObject({ ok: true, state: 'working' });
      await beforeRotation?.(agent);

      const subscriber = proxy
        .named('agentcom:sub')
        .find((c) => c.client.remotePort === near.redis.sub.stream.localPort);
      expect(subscriber).toBeDefined();
      subscriber?.holdReplies();
      const rotated = await api<{ token: string }>(far.url, 'POST', '/v1/agents', { agentId });
      expect(rotated.status).toBe(200);
      await eventually(
        // the adapter's message (JSON): the event, then the agent id
        () =>
          subscriber?.heldReplyBytes().includes(`"${STALE_TOKENS_EVENT}","${agentId}"`)
            ? true
            : undefined,
        { what: "the rotation's disconnect on its way to the cut-off replica" },
      );
      expect(agent.socket.connected).toBe(true);
      const told = new Promise((resolve) => agent.socket.once('hub:error', resolve));
      const closed = agent.disconnected();
      return { near, far, agent, msg, told, closed };
    }

    const taskView = async (hub: { url: string }, id: string) =>
      (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
    const agentView = async (hub: { url: string }, id: string) =>
      (await api<AgentView>(hub.url, 'GET', `/v1/agents/${id}`)).body;

    it('refuses its completion, closes it, and the task stays running', async () => {
      const { far, agent, msg, told, closed } = await rotatedUnderfoot(true);
      expect(await agent.complete(msg, 'from the old token')).toEqual({ ok: false, ...REVOKED });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      const task = await taskView(far, msg.task.id);
      expect(task).toMatchObject({ state: 'running', attempt: 1 });
      expect(task.result).toBeUndefined();
      expect(await agentView(far, agent.agentId)).toMatchObject({ tasksDone: 0 });
      expect(await direct.exists(far.keys.finished(msg.task.id))).toBe(0);
    });

    it('refuses its failure report, closes it, and the task stays running', async () => {
      const { far, agent, msg, told, closed } = await rotatedUnderfoot(true);
      expect(await agent.fail(msg, { error: 'old token', retryable: false })).toEqual({
        ok: false,
        ...REVOKED,
      });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      expect(await taskView(far, msg.task.id)).toMatchObject({ state: 'running', attempt: 1 });
      expect(await agentView(far, agent.agentId)).toMatchObject({ tasksFailed: 0 });
      // refused before the report lock or the intent was written
      expect(await direct.exists(far.keys.reporting(msg.task.id))).toBe(0);
      expect(await direct.exists(far.keys.finished(msg.task.id))).toBe(0);
    });

    it('refuses its accept, closes it, and the agent never starts the task', async () => {
      const { far, agent, msg, told, closed } = await rotatedUnderfoot(false);
      expect(await agent.accept(msg)).toEqual({ ok: false, ...REVOKED });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      expect(await direct.hget(far.keys.agent(agent.agentId), 'state')).toBe('assigned');
      expect(await direct.hget(far.keys.agent(agent.agentId), 'startedAt')).toBeNull();
    });

    it('refuses its progress, and closes it', async () => {
      const { far, agent, msg, told, closed } = await rotatedUnderfoot(true);
      const progress = agent.send('task:progress', {
        taskId: msg.task.id,
        token: msg.token,
        progress: 50,
      });
      expect(await progress).toEqual({ ok: false, ...REVOKED });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      expect((await taskView(far, msg.task.id)).progress).toBeFalsy();
    });

    it('refuses its log lines, and closes it', async () => {
      const { far, agent, msg, told, closed } = await rotatedUnderfoot(true);
      const logged = agent.send('task:log', {
        taskId: msg.task.id,
        token: msg.token,
        lines: ['from the old token'],
      });
      expect(await logged).toEqual({ ok: false, ...REVOKED });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      const logs = await api<{ logs: string[] }>(far.url, 'GET', `/v1/tasks/${msg.task.id}/logs`);
      expect(logs.body.logs).toEqual([]);
    });

    /** The id of the last entry of the events stream (`0-0` when empty). */
    const lastEventId = async (hub: Hub) =>
      (await direct.xrevrange(hub.keys.events, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
    /** The agent's transitions recorded after the stream entry `after`, as `reason: from→to`. */
    const transitionsAfter = async (hub: Hub, agentId: string, after: string) =>
      (await direct.xrange(hub.keys.events, `(${after}`, '+'))
        .map(([, flat]) => {
          const fields = new Map<string, string>();
          for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i] ?? '', flat[i + 1] ?? '');
          return fields;
        })
        .filter((fields) => fields.get('agent') === agentId)
        .map((fields) => `${fields.get('reason')}: ${fields.get('from')}→${fields.get('to')}`);

    it('refuses its own drain, closes it, and the agent keeps the task it was pushed', async () => {
      const { far, agent, msg, told, closed } = await rotatedUnderfoot(false);
      expect(await agent.send('agent:drain', {})).toEqual({ ok: false, ...REVOKED });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      // not given back to wait, and no drain recorded (the disconnect keeps the task too)
      const key = far.keys.agent(agent.agentId);
      expect(await direct.hmget(key, 'state', 'taskId', 'drainRequested')).toEqual([
        'assigned',
        msg.task.id,
        null,
      ]);
    });

    it('refuses its own resume, closes it, and the agent stays drained', async () => {
      const { far, agent, told, closed } = await rotatedUnderfoot(false, async (sidecar) => {
        // its own drain, before the rotation: the pushed task is given back
        expect(await sidecar.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
      });
      const before = await lastEventId(far);
      expect(await agent.send('agent:resume', {})).toEqual({ ok: false, ...REVOKED });
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      // the only transition since is the close's: the resume changed nothing
      const transitions = await eventually(
        async () => {
          const since = await transitionsAfter(far, agent.agentId, before);
          return since.some((t) => t.startsWith('disconnect')) ? since : undefined;
        },
        { what: 'the disconnect to be recorded' },
      );
      expect(transitions).toEqual(['disconnect: draining→offline']);
      expect(await direct.hget(far.keys.agent(agent.agentId), 'drainRequested')).toBe('self');
    });
  });

  /**
   * Rotates the agent's token in the store alone (a rotation whose message is lost) when the store
   * is first asked for a transition of the agent for `reason`, so after that step's read of the
   * record; `rotated()` says it happened, `restore()` puts the store back.
   */
  function rotateAtTransition(store: AgentStore, agentId: string, reason: string) {
    const transition = store.transition.bind(store);
    let rotated = false;
    store.transition = async (request) => {
      if (request.agentId === agentId && request.reason === reason && !rotated) {
        rotated = true;
        await store.register(agentId, hashToken('agc_the-next-token'));
      }
      return transition(request);
    };
    return {
      rotated: () => rotated,
      restore: () => {
        store.transition = transition;
      },
    };
  }

  it('refuses a connection whose token is rotated between its connect read the record and wrote it', async () => {
    const { far } = await replicas();
    const agentId = `connecting-${randomBytes(3).toString('hex')}`;
    const created = await api<{ token: string }>(far.url, 'POST', '/v1/agents', { agentId });
    // after the connect's read
    const rotation = rotateAtTransition(far.agents, agentId, 'connect');
    const agent = new TestAgent(far.url, agentId, created.body.token);
    agents.push(agent);
    try {
      let refusal: unknown;
      agent.socket.once('hub:error', (error) => (refusal = error));
      const closed = agent.disconnected();
      await agent.connect(); // the handshake passed
      // refused, or recorded as the agent's connection
      const outcome = await eventually(
        async () =>
          refusal ??
          ((await direct.hget(far.keys.agent(agentId), 'socketId')) ? 'recorded' : undefined),
        { what: 'the connect to be refused or recorded' },
      );
      expect(outcome).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      expect(rotation.rotated()).toBe(true);
      expect(await direct.hmget(far.keys.agent(agentId), 'state', 'socketId')).toEqual([
        'offline',
        null,
      ]);
    } finally {
      rotation.restore();
    }
  });

  it("refuses the agent's own drain when its token is rotated between the drain's read and write", async () => {
    const { far } = await replicas();
    const agentId = `draining-${randomBytes(3).toString('hex')}`;
    const created = await api<{ token: string }>(far.url, 'POST', '/v1/agents', { agentId });
    const agent = new TestAgent(far.url, agentId, created.body.token);
    agents.push(agent);
    await agent.connect();
    // after the drain's read
    const rotation = rotateAtTransition(far.agents, agentId, 'drain');
    try {
      const told = new Promise((resolve) => agent.socket.once('hub:error', resolve));
      const closed = agent.disconnected();
      expect(await agent.send('agent:drain', {})).toEqual({ ok: false, ...REVOKED });
      expect(rotation.rotated()).toBe(true);
      expect(await told).toEqual(REVOKED);
      expect(await closed).toBe('io server disconnect');
      expect(await direct.hget(far.keys.agent(agentId), 'drainRequested')).toBeNull();
    } finally {
      rotation.restore();
    }
  });

  describe('registration', () => {
    it('is one step: a revoke that lands during a creation leaves no working token', async () => {
      const { near, far } = await replicas();
      // the registration script loaded: the creation below is one command
      expect((await api(near.url, 'POST', '/v1/agents', { agentId: 'warm-up' })).status).toBe(201);
      const agentId = `racing-${randomBytes(3).toString('hex')}`;
      const key = near.keys.agent(agentId);
      // the registration's connection is held after its first command naming the record
      const held = proxy.holdCommandsAfter(key);
      const creating = api<{ token: string }>(near.url, 'POST', '/v1/agents', { agentId });
      const connection = await held;
      await eventually(async () => ((await direct.exists(key)) === 1 ? true : undefined), {
        what: "the registration's first command",
      });
      const seen = await direct.hgetall(key);
      const revoked = await api(far.url, 'DELETE', `/v1/agents/${agentId}`);
      connection.release();
      const created = await creating;
      expect(created.status).toBe(201);
      expect(revoked).toMatchObject({ status: 200, body: { agentId, revoked: true } });
      // revoked after it was created: its token is dead
      const late = new TestAgent(far.url, agentId, created.body.token);
      agents.push(late);
      await expect(late.connect()).rejects.toMatchObject({ data: { code: 'E_UNAUTHORIZED' } });
      // and no reader saw a record without its version and token hash
      expect(seen).toMatchObject({
        state: 'offline',
        version: '0',
        tokenHash: hashToken(created.body.token),
      });
    });

    it('of rotations that race, keeps exactly one working token: the last one Redis applied', async () => {
      const { near, far } = await replicas();
      const ids = [0, 1, 2].map((i) => `rotating-${i}-${randomBytes(3).toString('hex')}`);
      const monitor = await monitorRedis(redis.port);
      const applied = monitor.lines;
      let answers: Array<{ status: number; body: { token: string } }>;
      try {
        // six POSTs per agent at once, over both replicas: one creates it, five rotate its token
        answers = await Promise.all(
          ids.flatMap((agentId) =>
            Array.from({ length: 6 }, (_, i) =>
              api<{ token: string }>(i % 2 ? far.url : near.url, 'POST', '/v1/agents', {
                agentId,
              }),
            ),
          ),
        );
        // every command before this one has reached the monitor once this one has
        const barrier = `barrier-${randomBytes(3).toString('hex')}`;
        await direct.echo(barrier);
        await eventually(
          () => (applied.some((line) => line.includes(barrier)) ? true : undefined),
          {
            what: 'the monitor to catch up',
          },
        );
      } finally {
        monitor.close();
      }
      for (const [n, agentId] of ids.entries()) {
        const mine = answers.slice(n * 6, n * 6 + 6);
        expect(mine.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 201]);
        const tokens = mine.map((a) => a.body.token);
        expect(new Set(tokens).size).toBe(6);
        // the rotation Redis ran last: the last command naming one of these token hashes
        const hashes = tokens.map(hashToken);
        const last = applied.findLast((line) => hashes.some((hash) => line.includes(hash)));
        const lastHash = hashes.find((hash) => last?.includes(hash));
        expect(lastHash).toBeDefined();
        const working: string[] = [];
        for (const token of tokens) {
          const agent = new TestAgent(far.url, agentId, token);
          agents.push(agent);
          try {
            await agent.connect();
            working.push(token);
          } catch (err) {
            expect(err).toMatchObject({ data: { code: 'E_UNAUTHORIZED' } });
          } finally {
            agent.close();
          }
        }
        expect(working).toHaveLength(1);
        expect(hashToken(working[0] ?? '')).toBe(lastHash);
      }
    });
  });
});

/**
 * Redis's own account of the commands it runs, in the order it runs them (`MONITOR`, on a
 * connection of its own): one line each.
 */
async function monitorRedis(port: number): Promise<{ lines: string[]; close: () => void }> {
  const socket = connect(port, '127.0.0.1');
  const lines: string[] = [];
  let rest = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    const parts = (rest + chunk).split('\r\n');
    rest = parts.pop() ?? '';
    lines.push(...parts);
  });
  socket.write('MONITOR\r\n');
  await eventually(() => (lines.includes('+OK') ? true : undefined), { what: 'MONITOR' });
  return { lines, close: () => socket.destroy() };
}

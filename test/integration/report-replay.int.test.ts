import type { TaskAssign, TaskFail, TaskView } from '@agentcom/shared';
import { Job, Queue, UnrecoverableError } from 'bullmq';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { allowHubEveryKey, becomeAclAdmin, refuseKeyToHub } from '../helpers/acl';
import { freshAgentAssigned } from '../helpers/fresh-agent';
import { TEST_ADMIN_KEY, api, startTestHub } from '../helpers/hub';
import { sumMetric } from '../helpers/metrics';
import { eventually } from '../helpers/poll';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { TestAgent } from '../helpers/test-agent';

/**
 * The replay of a report whose replica died half-way. The test plays that replica: the report's
 * intent recorded (`beginReport`, as the hub runs it), then BullMQ's part or not, then nothing
 * more but its report lock running out. No lease tick runs meanwhile (HEARTBEAT_MS 60 s): the
 * dying replica's lease keeper would have died with it.
 */
describe('the replay of a report whose replica died half-way', () => {
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  let connection: Redis;
  const agents: TestAgent[] = [];
  const queues: Queue[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url, {
      HUB_ID: 'hub-d',
      HEARTBEAT_MS: '60000',
      LEASE_MS: '300000',
    });
    connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  });
  afterEach(async () => {
    for (const agent of agents.splice(0)) agent.close();
    for (const queue of queues.splice(0)) await queue.close();
  });
  afterAll(async () => {
    await connection.quit();
    await hub.close();
    await redis.dispose();
  });

  /**
   * A new agent works on a new task (`attempts`) and its replica dies applying its report
   * (`outcome`): the intent is recorded, `bullPart` runs (BullMQ's part, or what else happens to
   * the job), the report lock runs out. With `reconnect`, the sidecar then reconnects announcing
   * the finished task: the lock is gone, so the hub cannot resume the task and frees the agent.
   * Returns the connection the sidecar replays the report on.
   */
  const diedMidReport = async (options: {
    outcome: 'completed' | 'failed';
    attempts?: number;
    bullPart: (job: Job, token: string) => Promise<unknown>;
    reconnect: boolean;
  }) => {
    const { agent, queue, id, assignment } = await freshAgentAssigned(
      agents,
      hub.url,
      options.attempts !== undefined ? { attempts: options.attempts } : {},
    );
    const bull = new Queue(queue, { connection, prefix: hub.keys.bullPrefix });
    queues.push(bull);
    const { agentId } = agent;
    const { token } = assignment;
    await agent.accept(assignment);
    const begun = await hub.agents.beginReport({
      agentId,
      taskId: id,
      token,
      outcome: options.outcome,
      lockId: 'the-dying-replica',
      lockTtlMs: 5000,
      finishedTtlMs: 60_000,
    });
    expect(begun.status).toBe('ok');
    const job = await Job.fromId(bull, id);
    if (!job) throw new Error(`no job ${id}`);
    await options.bullPart(job, token);
    await connection.del(hub.keys.reporting(id)); // its report lock ran out
    let sender = agent;
    if (options.reconnect) {
      agent.current = { taskId: id, token, state: 'finished' };
      sender = await agent.reconnectTo(hub.url);
      agents.push(sender);
      await eventually(
        async () => ((await hub.agents.get(agentId))?.token !== token ? true : undefined),
        { what: 'the agent freed by its reconnect' },
      );
    }
    return { queue, id, token, agentId, sender };
  };
  const getTask = async (id: string): Promise<TaskView> =>
    (await api<TaskView>(hub.url, 'GET', `/v1/tasks/${id}`)).body;
  /** The task's attempts BullMQ counted. */
  const attemptsMade = async (queue: string, id: string): Promise<number> =>
    Number((await connection.hget(hub.keys.bullJob(queue, id), 'atm')) ?? 0);
  /** This hub's count of the queue's failed tasks (the dying replica's died with it). */
  const failuresCounted = async (queue: string): Promise<number> => {
    const response = await fetch(`${hub.url}/metrics`, {
      headers: { authorization: `Bearer ${TEST_ADMIN_KEY}` },
    });
    return sumMetric([await response.text()], 'agentcom_tasks_failed_total', `"${queue}"`);
  };
  /** The assignment of task `id` to `agent` under another token than `token` (also a past one). */
  const handedOutAgain = (agent: TestAgent, id: string, token: string): Promise<TaskAssign> =>
    eventually(() => agent.assignments.find((a) => a.task.id === id && a.token !== token), {
      what: `task ${id} handed out again`,
    });

  it.each([
    ['the replay comes on the same connection', false],
    ['the sidecar reconnected first, which released the agent', true],
  ])(
    'answers the replay of a completion whose replica died after BullMQ completed the job as a duplicate: %s',
    async (_, reconnect) => {
      const { id, token, agentId, sender } = await diedMidReport({
        outcome: 'completed',
        bullPart: (job, lock) => job.moveToCompleted('done', lock, false),
        reconnect,
      });
      if (reconnect) expect((await hub.agents.get(agentId))?.taskId).toBeUndefined();
      expect(await sender.send('task:complete', { taskId: id, token, result: 'done' })).toEqual({
        ok: true,
        duplicate: true,
      });
      expect(await getTask(id)).toMatchObject({ state: 'completed', result: 'done' });
      // a reconnect released the agent without counting the task as done
      expect(await hub.agents.get(agentId)).toMatchObject({
        state: 'idle',
        tasksDone: reconnect ? 0 : 1,
      });
      expect(await connection.get(hub.keys.finished(id))).toBe(`completed ${token}`);
    },
  );

  describe.each([
    ['the replay comes on the same connection', false],
    ['the sidecar reconnected first, which released the agent', true],
  ])('answers as a duplicate the replay of a failure BullMQ applied: %s', (_, reconnect) => {
    /** What every such replay leaves: the report's marker, no lock, nothing counted twice. */
    const expectFinished = async (queue: string, id: string, token: string) => {
      expect(await connection.get(hub.keys.finished(id))).toBe(`failed ${token}`);
      expect(await connection.get(hub.keys.reporting(id))).toBeNull();
      expect(await failuresCounted(queue)).toBe(0);
    };

    it('a final failure', async () => {
      const { queue, id, token, agentId, sender } = await diedMidReport({
        outcome: 'failed',
        bullPart: (job, lock) => job.moveToFailed(new UnrecoverableError('boom'), lock, false),
        reconnect,
      });
      const fail = { taskId: id, token, error: 'boom', retryable: false };
      expect(await sender.send('task:fail', fail)).toEqual({ ok: true, duplicate: true });
      expect(await getTask(id)).toMatchObject({ state: 'failed', error: 'boom', attemptsMade: 1 });
      // a reconnect released the agent without counting the failure
      expect(await hub.agents.get(agentId)).toMatchObject({
        state: 'idle',
        tasksFailed: reconnect ? 0 : 1,
      });
      await expectFinished(queue, id, token);
      expect(await sender.send('task:fail', fail)).toEqual({ ok: true, duplicate: true });
    });

    it('a failure BullMQ retries: the retry runs once, on the freed agent', async () => {
      const { queue, id, token, agentId, sender } = await diedMidReport({
        outcome: 'failed',
        attempts: 3,
        bullPart: (job, lock) => job.moveToFailed(new Error('flaky'), lock, false),
        reconnect,
      });
      const fail = { taskId: id, token, error: 'flaky', retryable: true };
      expect(await sender.send('task:fail', fail)).toEqual({ ok: true, duplicate: true });
      // freed by the replay, or by the reconnect before it: the agent is handed the retry
      const retry = await handedOutAgain(sender, id, token);
      expect(retry).toMatchObject({ attempt: 2 });
      expect(await attemptsMade(queue, id)).toBe(1);
      const record = await hub.agents.get(agentId);
      expect(record).toMatchObject({
        taskId: id,
        token: retry.token,
        tasksFailed: reconnect ? 0 : 1,
      });
      await expectFinished(queue, id, token);
    });

    it('a quota: the job went back to wait without an attempt', async () => {
      const { queue, id, token, agentId, sender } = await diedMidReport({
        outcome: 'failed',
        bullPart: (job, lock) => job.moveToWait(lock),
        reconnect,
      });
      const rateLimitedUntil = Date.now() + 60_000;
      const fail = { taskId: id, token, error: 'quota', retryable: true, rateLimitedUntil };
      expect(await sender.send('task:fail', fail)).toEqual({ ok: true, duplicate: true });
      expect(await attemptsMade(queue, id)).toBe(0);
      if (reconnect) {
        // the reconnect freed the agent before the replay could cool it down
        expect(await handedOutAgain(sender, id, token)).toMatchObject({ attempt: 1 });
      } else {
        expect(await hub.agents.get(agentId)).toMatchObject({
          state: 'cooldown',
          cooldownUntil: rateLimitedUntil,
          tasksFailed: 0,
        });
        expect((await getTask(id)).state).toBe('waiting');
      }
      await expectFinished(queue, id, token);
    });
  });

  it.each([
    ['a failure', 'its job stalled', undefined],
    ['a quota', 'its job stalled', 60_000],
    ['a failure', 'its job was put back to wait under its token', undefined],
  ])(
    'refuses the replay of %s whose replica died before BullMQ took it: %s',
    async (_, jobAfter, rateLimitedFor) => {
      const { queue, id, token, agentId, sender } = await diedMidReport({
        outcome: 'failed',
        bullPart: async (job, lock) => {
          if (jobAfter !== 'its job stalled') return job.moveToWait(lock);
          // the lock runs out (no replica extends it): the stalled checker puts the job back
          await connection.del(hub.keys.bullLock(job.queueName, job.id ?? ''));
          return eventually(async () => ((await job.getState()) === 'waiting' ? true : undefined), {
            what: 'the stalled job back to wait',
          });
        },
        reconnect: false,
      });
      const fail = {
        taskId: id,
        token,
        error: 'late',
        retryable: true,
        ...(rateLimitedFor !== undefined ? { rateLimitedUntil: Date.now() + rateLimitedFor } : {}),
      };
      expect(await sender.send('task:fail', fail)).toMatchObject({
        ok: false,
        code: 'E_ASSIGNMENT_SUPERSEDED',
      });
      expect(await attemptsMade(queue, id)).toBe(0);
      expect(await connection.get(hub.keys.finished(id))).not.toBe(`failed ${token}`);
      const record = await hub.agents.get(agentId);
      expect(record?.token).not.toBe(token);
      expect(record?.tasksFailed).toBe(0);
    },
  );

  /**
   * A report whose apply fails part-way on a replica that lives on (the sidecar sees the error and
   * replays the report at once): Redis refuses the hub's user (ACL) one key that only a later step
   * of the apply uses. The report lock (TTL 5 s) must not outlive the failure: a lock left behind
   * makes the replay wait for it to run out.
   */
  describe('a report whose apply failed part-way on a live replica', () => {
    /** Well within the report lock's TTL (5 s). */
    const AT_ONCE_MS = 2000;
    /** A user of the test's own: the ACL restricts the hub's (`default`). */
    let admin: Redis;

    beforeAll(async () => {
      admin = new Redis(redis.url, { maxRetriesPerRequest: null });
      await becomeAclAdmin(admin);
    });
    afterEach(async () => {
      await allowHubEveryKey(admin);
    });
    afterAll(async () => {
      await admin.quit();
    });

    /** A new agent working on a new task, and the final failure it reports. */
    const working = async () => {
      const { agent, queue, id, assignment } = await freshAgentAssigned(agents, hub.url);
      expect(await agent.accept(assignment)).toMatchObject({ ok: true });
      const { token } = assignment;
      const fail: TaskFail = { taskId: id, token, error: 'boom', retryable: false };
      return { queue, id, token, agentId: agent.agentId, agent, fail };
    };
    /** The replay's ack and how long it took. */
    const replay = async (agent: TestAgent, fail: TaskFail) => {
      const started = Date.now();
      const ack = await agent.send('task:fail', fail);
      return { ack, elapsedMs: Date.now() - started };
    };
    /** What the failure leaves once applied, once. */
    const expectFailedOnce = async (queue: string, id: string, token: string, agentId: string) => {
      expect(await getTask(id)).toMatchObject({ state: 'failed', error: 'boom', attemptsMade: 1 });
      expect(await hub.agents.get(agentId)).toMatchObject({ state: 'idle', tasksFailed: 1 });
      expect(await failuresCounted(queue)).toBe(1);
      expect(await admin.get(hub.keys.finished(id))).toBe(`failed ${token}`);
      expect(await admin.get(hub.keys.reporting(id))).toBeNull();
    };

    it('BullMQ failed the job, then the release of the agent failed: the replay, answered at once, finishes it as a duplicate', async () => {
      const { queue, id, token, agentId, agent, fail } = await working();
      // the release (`transitionThenClaim`) declares the queue's idle index: refused before it runs
      await refuseKeyToHub(admin, hub.keys.idle(queue));
      expect(await agent.send('task:fail', fail)).toMatchObject({ ok: false, code: 'E_INTERNAL' });
      // BullMQ's part applied, the rest not; the intent stays for the replay, the lock does not
      expect(await admin.hget(hub.keys.bullJob(queue, id), 'atm')).toBe('1');
      expect(await admin.hget(hub.keys.agent(agentId), 'state')).toBe('working');
      expect(await admin.get(hub.keys.finished(id))).toBe(`failing ${token} ${queue} 0 0`);
      expect(await admin.get(hub.keys.reporting(id))).toBeNull();

      await allowHubEveryKey(admin);
      const { ack, elapsedMs } = await replay(agent, fail);
      expect(ack).toEqual({ ok: true, duplicate: true });
      expect(elapsedMs).toBeLessThan(AT_ONCE_MS);
      await expectFailedOnce(queue, id, token, agentId);
    });

    it('its first step failed after taking the lock: the replay, answered at once, applies it', async () => {
      const { queue, id, token, agentId, agent, fail } = await working();
      // `beginReport.lua` reads the job's counts by a key name it builds: it fails there, after
      // taking the lock and before recording the intent
      await refuseKeyToHub(admin, hub.keys.bullJob(queue, id));
      expect(await agent.send('task:fail', fail)).toMatchObject({ ok: false, code: 'E_INTERNAL' });
      expect(await admin.get(hub.keys.reporting(id))).toBeNull();
      expect(await admin.get(hub.keys.finished(id))).toBeNull();
      expect(await admin.get(hub.keys.bullLock(queue, id))).toBe(token);
      expect(await admin.hget(hub.keys.agent(agentId), 'state')).toBe('working');

      await allowHubEveryKey(admin);
      const { ack, elapsedMs } = await replay(agent, fail);
      expect(ack).toEqual({ ok: true });
      expect(elapsedMs).toBeLessThan(AT_ONCE_MS);
      await expectFailedOnce(queue, id, token, agentId);
    });
  });
});

import { randomBytes } from 'node:crypto';
import type { TaskAssign } from '@agentcom/shared';
import {
  allowHubEveryKey,
  becomeAclAdmin,
  refuseHubWritesTo,
  refuseKeyToHub,
} from '../helpers/acl';
import { IDEMPOTENCY_TTL_MS } from '../../hub/src/tasks/idempotency-keys';
import { api } from '../helpers/hub';
import { eventually } from '../helpers/poll';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * Writes Redis refuses with an error reply (here an ACL on one key; `OOM` and a read-only replica
 * refuse a script at its first write, an ACL at the command that names the key) part-way through
 * one of the hub's scripts, after the script wrote something else. The parts already written
 * must leave the agent as the next event, sweep or replay can repair: an agent whose record says
 * `idle` while the idle indexes no longer list it is never claimed again, and nothing but its
 * reconnect adds it back.
 */
describe('writes Redis refuses part-way through a step', () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  beforeAll(async () => {
    await becomeAclAdmin(fixture.admin);
  });
  afterEach(async () => {
    await allowHubEveryKey(fixture.admin);
  });

  const newQueue = (): string => `q-${randomBytes(4).toString('hex')}`;

  async function register(queues: string[]): Promise<TestAgent> {
    const agentId = `refused-${randomBytes(4).toString('hex')}`;
    const agent = await TestAgent.register(fixture.hub.url, agentId, queues);
    agents.push(agent);
    return agent;
  }

  /** Creates a task in `queue` and resolves once the hub pushed it to `agent`. */
  async function pushed(
    agent: TestAgent,
    queue: string,
    fields: Record<string, unknown> = {},
  ): Promise<TaskAssign> {
    const assigned = agent.nextAssignment();
    const created = await api(fixture.hub.url, 'POST', '/v1/tasks', {
      queue,
      payload: {},
      ...fields,
    });
    expect(created.status).toBe(201);
    return assigned;
  }

  /**
   * An agent serving two queues runs a task (`fields`) of the second, and reports it complete
   * while Redis refuses the first queue's idle index to the hub: the one-script completion
   * declares the task's queue's idle index, not the other one's, so its release meets that one
   * at the ZADD of the agent's own queues (`idleAddOwn`), and the report is answered
   * `E_INTERNAL`. The caller lifts the refusal.
   */
  async function completionRefusedAtRelease(fields: Record<string, unknown> = {}) {
    const { hub, admin } = fixture;
    const [first, second] = [newQueue(), newQueue()];
    const agent = await register([first, second]);
    const msg = await pushed(agent, second, fields);
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
    await refuseKeyToHub(admin, hub.keys.idle(first));
    const complete = { taskId: msg.task.id, token: msg.token, result: 1 };
    expect(await agent.send('task:complete', complete)).toMatchObject({
      ok: false,
      code: 'E_INTERNAL',
    });
    return { agent, msg, complete, first, second };
  }

  it('a completion whose release Redis refuses part-way leaves the agent to its replay: claimable again once Redis takes it', async () => {
    const { hub, admin } = fixture;
    const { agent, msg, complete, first, second } = await completionRefusedAtRelease();
    // BullMQ's part is applied, and the finished marker; the record still holds the task (not
    // `idle` and listed nowhere): the replay finishes the rest
    expect(await admin.get(hub.keys.finished(msg.task.id))).toBe(`completed ${msg.token}`);
    expect(await admin.hmget(hub.keys.agent(agent.agentId), 'state', 'taskId')).toEqual([
      'working',
      msg.task.id,
    ]);

    await allowHubEveryKey(admin);
    // the sidecar replays an unanswered report
    expect((await agent.send('task:complete', complete)).ok).toBe(true);
    expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'idle' });
    const listed = await Promise.all(
      [first, second].map((queue) => admin.zscore(hub.keys.idle(queue), agent.agentId)),
    );
    expect(listed.map((score) => score !== null)).toEqual([true, true]);
    // and the next task of its queues reaches it
    const next = await pushed(agent, second);
    expect(next.task.id).not.toBe(msg.task.id);
  });

  it('a completion stopped part-way has its idempotency key settled by the replay: it names the task 24 h, not ten years', async () => {
    const { hub, admin } = fixture;
    const key = `refused-${randomBytes(4).toString('hex')}`;
    // stopped at the release, before the settle that follows it in the same script
    const { agent, msg, complete, second } = await completionRefusedAtRelease({
      idempotencyKey: key,
    });
    const keyName = hub.keys.bullDeduplication(second, key);
    expect(await admin.pttl(keyName)).toBeGreaterThan(IDEMPOTENCY_TTL_MS);

    await allowHubEveryKey(admin);
    expect(await agent.send('task:complete', complete)).toEqual({ ok: true, duplicate: true });
    const ttl = await admin.pttl(keyName);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(IDEMPOTENCY_TTL_MS);
    expect(await admin.get(keyName)).toBe(msg.task.id);
  });

  it('a dispatch step whose write of the claimed record Redis refuses leaves the agent claimable: the task reaches it once Redis takes it', async () => {
    const { hub, admin } = fixture;
    const queue = newQueue();
    const agent = await register([queue]);
    // the claim reads the record (by a name it builds), then writes it last
    await refuseHubWritesTo(admin, hub.keys.agent(agent.agentId));
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    expect(created.status).toBe(201);
    // the step fails (no event tells): BullMQ's fetch went through, the record was not written
    await eventually(
      async () =>
        (await admin.get(hub.keys.bullLock(queue, created.body.id))) === null ? undefined : true,
      { timeoutMs: 10_000, what: 'the dispatch step to fetch the job' },
    );
    expect(await admin.hget(hub.keys.agent(agent.agentId), 'state')).toBe('idle');
    // the record says idle: the idle index lists it still
    expect(await admin.zscore(hub.keys.idle(queue), agent.agentId)).not.toBeNull();

    await allowHubEveryKey(admin);
    // the fetched job's lock runs out (LEASE_MS), the stalled checker puts it back, a step hands
    // it to the agent (not before: the job stays locked until then)
    const msg = await agent.nextAssignment(20_000);
    expect(msg.task.id).toBe(created.body.id);
    expect(await agent.accept(msg)).toMatchObject({ ok: true });
  });
});

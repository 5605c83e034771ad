import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { AGENT_NAMESPACE, type TaskAssign } from '@agentcom/shared';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { api, startTestHub } from '../helpers/hub';
import { useHubsFixture } from '../helpers/hubs-fixture';
import { readTransitions } from '../helpers/invariants';
import { TestAgent } from '../helpers/test-agent';

/**
 * A `task:accept` whose connection closes while the accept script's reply is on its way: the
 * replica must not start extending the lease of a connection whose disconnect it recorded
 * (`AssignmentService.accept` tracks the lease only while the connection is open). Real Redis,
 * paused with `CLIENT PAUSE WRITE` to hold the script and its reply; real Socket.IO.
 */
describe('an accept from a connection that closes while its script runs', () => {
  const fixture = useHubsFixture();
  const { hubs, agents } = fixture;
  /** The test's own connection, to pause Redis (and read while the replica's are held). */
  let control: Redis | undefined;
  afterEach(async () => {
    if (!control) return;
    await control.call('CLIENT', 'UNPAUSE').catch(() => undefined);
    control.disconnect();
    control = undefined;
  });

  /** A replica, and an agent of a new queue it pushed a new task to (not accepted yet). */
  const pushed = async () => {
    const prefix = `k${randomBytes(3).toString('hex')}`;
    // no sweep during the test: it would only add commands held by the pause
    const hub = await startTestHub(fixture.redis.url, {
      AGENTCOM_PREFIX: prefix,
      SWEEP_MS: '60000',
    });
    hubs.push(hub);
    const queue = `q-${randomBytes(4).toString('hex')}`;
    const agent = await TestAgent.register(hub.url, `agent-${randomBytes(4).toString('hex')}`, [
      queue,
    ]);
    agents.push(agent);
    const assigned = agent.nextAssignment();
    const created = await api<{ id: string }>(hub.url, 'POST', '/v1/tasks', { queue, payload: {} });
    expect(created.status).toBe(201);
    return { hub, prefix, agent, msg: await assigned };
  };

  /**
   * Sends `task:accept` of `msg` while Redis holds every write (scripts included), closes the
   * agent's connection once the replica has sent the accept script, and lets Redis go on only
   * after the replica saw the connection close. Resolves once the disconnect is recorded.
   */
  const acceptThenClose = async (hub: Hub, agent: TestAgent, msg: TaskAssign) => {
    // the replica's end of the agent's connection (same id on both ends)
    const serverSocket = hub.io.of(AGENT_NAMESPACE).sockets.get(agent.socket.id ?? '');
    if (!serverSocket) throw new Error('the agent connection is not on this replica');
    // listeners run in order: the gateway's own has queued the handler, whose first step sends
    // the accept script; the next turn of the event loop comes after it
    const acceptSent = new Promise<void>((resolve) => {
      serverSocket.once('task:accept', () => setImmediate(resolve));
    });
    const closed = once(serverSocket, 'disconnect');

    control ??= new Redis(fixture.redis.url);
    expect(await control.call('CLIENT', 'PAUSE', '60000', 'WRITE')).toBe('OK');
    const acked = agent.accept(msg).catch((err: Error) => err);
    await acceptSent;
    agent.close();
    await closed;
    expect(serverSocket.connected).toBe(false);
    expect(await control.call('CLIENT', 'UNPAUSE')).toBe('OK');
    // its connection closed before the reply: the agent never hears of this accept
    expect(await acked).toBeInstanceOf(Error);
    await hub.gateway.settled(5000);
  };

  /** The agent's transitions were connect, assign, accept, disconnect: working, without a socket. */
  const expectWorkingAndDisconnected = async (
    hub: Hub,
    prefix: string,
    agentId: string,
    msg: TaskAssign,
  ) => {
    const events = (await readTransitions(fixture.redis.url, prefix)).filter(
      (event) => event.agent === agentId,
    );
    expect(events.map((event) => event.reason)).toEqual([
      'connect',
      'assign',
      'accept',
      'disconnect',
    ]);
    const record = await hub.agents.get(agentId);
    expect(record).toMatchObject({ state: 'working', taskId: msg.task.id, token: msg.token });
    expect(record?.socketId).toBeUndefined();
    expect(record?.disconnectedAt).toEqual(expect.any(Number));
  };

  /** The replica extends no lease of the agent: a lease round leaves the task's lock to run out. */
  const expectLeaseLeftToRunOut = async (hub: Hub, agentId: string, msg: TaskAssign) => {
    expect(hub.leases.heldBy(agentId)).toBeUndefined();
    const lock = hub.keys.bullLock(msg.task.queue, msg.task.id);
    const before = await hub.redis.command.pttl(lock);
    expect(before).toBeGreaterThan(0);
    await hub.leases.tick();
    expect(await hub.redis.command.get(lock)).toBe(msg.token);
    expect(await hub.redis.command.pttl(lock)).toBeLessThanOrEqual(before);
  };

  it('applies the first accept, then records the disconnect: the task waits for its lease, untracked', async () => {
    // One round trip: the disconnect's read, sent after the accept on the same connection, is
    // answered after it, so the disconnect untracks whatever the accept tracked.
    const { hub, prefix, agent, msg } = await pushed();
    await acceptThenClose(hub, agent, msg);

    await expectWorkingAndDisconnected(hub, prefix, agent.agentId, msg);
    await expectLeaseLeftToRunOut(hub, agent.agentId, msg);
  });

  it('does not track the lease again for a replayed accept answered after the disconnect was recorded', async () => {
    // The agent works on its task and confirms it once more on the same connection (a sidecar
    // does when the push of its running task comes again). Redis's script cache is empty (a
    // promoted replica, SCRIPT FLUSH): the accept takes two round trips, EVALSHA refused
    // NOSCRIPT then EVAL, and the disconnect's read, sent between them, is answered first. The
    // disconnect is recorded (lease untracked) before the accept's answer comes back.
    const { hub, prefix, agent, msg } = await pushed();
    expect(await agent.accept(msg)).toEqual({ ok: true, state: 'working' });
    expect(hub.leases.heldBy(agent.agentId)).toMatchObject({ token: msg.token });
    control = new Redis(fixture.redis.url);
    expect(await control.script('FLUSH')).toBe('OK');

    await acceptThenClose(hub, agent, msg);

    // a replayed accept changes nothing in the record
    await expectWorkingAndDisconnected(hub, prefix, agent.agentId, msg);
    // the accept's answer came last, to a closed connection: the lease is not tracked again
    await expectLeaseLeftToRunOut(hub, agent.agentId, msg);
  });
});

import { randomBytes } from 'node:crypto';
import { allowHubEveryKey, becomeAclAdmin, refuseHubWritesTo } from '../helpers/acl';
import { eventually } from '../helpers/poll';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * A disconnect Redis refuses to record (an error reply, as `OOM` or a read-only replica would
 * give; here an ACL on the agent's record) is recorded again later. It was only logged: the
 * record named the closed connection for as long as the replica ran, an idle agent stayed
 * claimable, and nothing cleared it.
 */
describe('a disconnect Redis refused to record', () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  /** An idle agent whose record Redis then refuses to let the hub write; the test lifts it. */
  async function idleAgentWithRecordRefused() {
    const { hub, admin } = fixture;
    const agent = await TestAgent.register(hub.url, `ghost-${randomBytes(3).toString('hex')}`);
    agents.push(agent);
    const socketId = agent.socket.id;
    await becomeAclAdmin(admin);
    await refuseHubWritesTo(admin, hub.keys.agent(agent.agentId));
    return { agent, socketId };
  }

  /** Closes the agent's connection once the replica heard it and tried to record it. */
  async function closeAndTry(agent: TestAgent, socketId: string | undefined) {
    const { hub } = fixture;
    agent.close();
    await eventually(() => (hub.gateway.nsp.sockets.has(socketId ?? '') ? undefined : true), {
      timeoutMs: 5000,
      what: 'the replica to hear the close',
    });
    await hub.gateway.settled(5000);
  }

  afterEach(async () => {
    await allowHubEveryKey(fixture.admin);
  });

  it('is recorded once Redis takes it: the agent goes offline and leaves the idle indexes', async () => {
    const { hub, admin } = fixture;
    const { agent, socketId } = await idleAgentWithRecordRefused();
    await closeAndTry(agent, socketId);
    expect(hub.gateway.unrecordedDisconnects()).toBe(1);
    expect(await hub.agents.get(agent.agentId)).toMatchObject({ state: 'idle', socketId });

    await allowHubEveryKey(admin);
    const record = await eventually(
      async () => {
        const current = await hub.agents.get(agent.agentId);
        return current?.state === 'offline' ? current : undefined;
      },
      { timeoutMs: 10_000, what: 'the disconnect recorded on a retry' },
    );
    expect(record.socketId).toBeUndefined();
    expect(hub.gateway.unrecordedDisconnects()).toBe(0);
    // no longer claimable: a task created now waits
    const idle = await admin.zrange(hub.keys.idle('default'), '0', '-1');
    expect(idle).not.toContain(agent.agentId);
  });

  it('leaves alone a connection the agent made meanwhile', async () => {
    const { hub, admin } = fixture;
    const { agent, socketId } = await idleAgentWithRecordRefused();
    await closeAndTry(agent, socketId);
    expect(hub.gateway.unrecordedDisconnects()).toBe(1);

    // Redis takes writes again, and the agent connects before the retry is due
    await allowHubEveryKey(admin);
    const again = new TestAgent(hub.url, agent.agentId, agent.token);
    agents.push(again);
    await again.connect();
    await again.recorded();
    await eventually(() => (hub.gateway.unrecordedDisconnects() === 0 ? true : undefined), {
      timeoutMs: 10_000,
      what: 'the retry',
    });
    expect(await hub.agents.get(agent.agentId)).toMatchObject({
      state: 'idle',
      socketId: again.socket.id,
    });
    expect(await again.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'idle' });
  });
});

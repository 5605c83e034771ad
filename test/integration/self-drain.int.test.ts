import { AgentControl } from '../../hub/src/agents/agent-control';
import { eventually } from '../helpers/hub';
import { TestAgent } from '../helpers/test-agent';
import { useTestHub } from '../helpers/test-hub-fixture';

/**
 * An agent's own drain or resume (`agent:drain`, `agent:resume`, sent by a stopping or started
 * sidecar) applies to the connection that asked. A replica that handled a drain late (its Redis
 * link stalled) found the agent connected again, on another replica, through a new sidecar: the
 * stopped sidecar's drain left the new connection `draining`, taking no task until its next
 * reconnect. The late event is played here through the replica's `AgentControl` with the old
 * connection's id, as the gateway passes it; the agent's live connection goes through the
 * gateway itself.
 */
describe("an agent's own drain applies to the connection that asked", () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  it('a drain or resume from a connection the agent left changes nothing', async () => {
    const { hub } = fixture;
    const agentId = 'self-drain';
    const stopped = await TestAgent.register(hub.url, agentId);
    const staleSocketId = stopped.socket.id!;
    const live = await stopped.reconnectTo(hub.url);
    agents.push(stopped, live);
    await eventually(
      async () => ((await hub.agents.get(agentId))?.socketId === live.socket.id ? true : undefined),
      { what: 'the record to name the new connection' },
    );
    const control = new AgentControl(
      hub.agents,
      () => undefined,
      hub.gateway,
      async () => undefined,
    );

    expect(await control.drain(agentId, { socketId: staleSocketId })).toBe('idle');
    expect((await hub.agents.get(agentId))?.state).toBe('idle');

    // the live connection's own drain applies, and a late resume of the old one leaves it
    expect(await live.send('agent:drain', {})).toEqual({ ok: true, state: 'draining' });
    expect(await control.undrain(agentId, { socketId: staleSocketId })).toBe('draining');
    expect((await hub.agents.get(agentId))?.state).toBe('draining');
    expect(await live.send('agent:resume', {})).toEqual({ ok: true, state: 'idle' });
  });
});

import { randomBytes } from 'node:crypto';
import type { HubError } from '@agentcom/shared';
import { AgentControl } from '../../hub/src/agents/agent-control';
import { hashToken, mintAgentToken } from '../../hub/src/auth/tokens';
import { allowHubEveryKey, becomeAclAdmin, refuseKeyToHub } from '../helpers/acl';
import { api } from '../helpers/hub';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

const REPLACED = { code: 'E_UNAUTHORIZED', message: 'the agent token was replaced' };

/**
 * The close a rotation sends reaches each replica when it reaches it: late, after a later rotation
 * and a connection made with the newest token. `deaf` hears nothing the other replica sends (its
 * adapter's subscriptions are dropped), so a connection made there with an old token stays open
 * until a close is handled on `deaf` itself.
 */
describe('a token rotation closes only the connections of a token no longer the agent’s', () => {
  const fixture = useTestHub({ hubIds: ['deaf', 'hearing'] });
  const { agents } = fixture;
  beforeAll(() => {
    const { sub } = fixture.hubs[0].redis;
    sub.removeAllListeners('pmessageBuffer');
    sub.removeAllListeners('messageBuffer');
  });

  const newAgentId = (name: string) => `${name}-${randomBytes(3).toString('hex')}`;

  /** A registered agent connected to `hub` (its connection recorded). */
  async function register(hub: TestHub, agentId: string): Promise<TestAgent> {
    const agent = await TestAgent.register(hub.url, agentId);
    agents.push(agent);
    return agent;
  }

  /** Rotates the agent's token through `hub` (its close sent as usual); the new token. */
  async function rotate(hub: TestHub, agentId: string): Promise<string> {
    const rotated = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', { agentId });
    expect(rotated.status).toBe(200);
    return rotated.body.token;
  }

  /** A connection with the agent's token, on `hub`, whose `hub:error`s are kept from the start. */
  async function connect(hub: TestHub, agentId: string, token: string) {
    const agent = new TestAgent(hub.url, agentId, token);
    agents.push(agent);
    const errors: HubError[] = [];
    agent.socket.on('hub:error', (error) => errors.push(error));
    await agent.connect();
    expect(await agent.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'idle' });
    return { agent, errors };
  }

  /**
   * Another agent, connected to `hub`, whose token was replaced in the store alone (no close
   * sent): a close of its own sent after another's is handled after it, so its end shows that
   * `hub` has handled the close sent before.
   */
  async function witnessOn(hub: TestHub): Promise<TestAgent> {
    const witness = await register(hub, newAgentId('witness'));
    expect(await hub.agents.register(witness.agentId, hashToken(mintAgentToken()))).toBe(false);
    return witness;
  }

  /** What a replica's handler of a rotation runs, on `hub`: the control's close of old tokens. */
  const lateClose = (hub: TestHub, ...agentIds: string[]): void => {
    const control = new AgentControl(
      hub.agents,
      () => undefined,
      hub.gateway,
      async () => {},
    );
    for (const agentId of agentIds) control.tokenReplaced(agentId);
  };

  /** The `hub:error` the agent is told, and the reason its connection closes. */
  const ending = (agent: TestAgent) =>
    Promise.all([
      new Promise((resolve) => agent.socket.once('hub:error', resolve)),
      agent.disconnected(),
    ]);

  /**
   * Once the witness is closed (the replica handled the close sent before its own), the fresh
   * connection was told nothing, is still open and its heartbeat is answered.
   */
  async function expectKeptOnceHandled(
    fresh: Awaited<ReturnType<typeof connect>>,
    witnessEnds: ReturnType<typeof ending>,
  ): Promise<void> {
    expect(await witnessEnds).toEqual([REPLACED, 'io server disconnect']);
    expect(fresh.errors).toEqual([]);
    expect(fresh.agent.socket.connected).toBe(true);
    expect(await fresh.agent.send('agent:heartbeat', {})).toMatchObject({
      ok: true,
      state: 'idle',
    });
  }

  it('keeps the connection of the newest token when the close of an earlier rotation reaches its replica late', async () => {
    const [deaf, hearing] = fixture.hubs;
    const agentId = newAgentId('raced');
    const old = await register(deaf, agentId);
    // two rotations (tokens T1 then T2): `deaf` hears neither close
    await rotate(hearing, agentId);
    const newest = await rotate(hearing, agentId);
    const fresh = await connect(hearing, agentId, newest);
    // nor the close of the old connection the fresh one replaced (E_REPLACED)
    expect(old.socket.connected).toBe(true);
    const witness = await witnessOn(hearing);
    const oldEnds = ending(old);
    const witnessEnds = ending(witness);

    // the close of the first rotation, handled late on `deaf` (there, then through Redis)
    lateClose(deaf, agentId, witness.agentId);

    // `hearing` handled the agent's close before the witness's
    await expectKeptOnceHandled(fresh, witnessEnds);
    expect((await hearing.agents.get(agentId))?.socketId).toBe(fresh.agent.socket.id);
    // the connection of the first token, on `deaf`, is closed
    expect(await oldEnds).toEqual([REPLACED, 'io server disconnect']);
  });

  it('keeps the connection made after the agent was given a new token when the close of its revoke comes late', async () => {
    const [, hearing] = fixture.hubs;
    const agentId = newAgentId('revoked');
    await register(hearing, agentId);
    // the revoke's close is held until the agent has a new token and a connection with it
    const held: Array<() => void> = [];
    const control = new AgentControl(
      hearing.agents,
      () => undefined,
      {
        closeStaleTokenConnections: (...args) =>
          held.push(() => hearing.gateway.closeStaleTokenConnections(...args)),
        assign: () => undefined,
        cancel: () => undefined,
      },
      async () => {},
    );
    await control.revoke(agentId);
    expect(held.length).toBeGreaterThan(0);
    const created = await api<{ token: string }>(hearing.url, 'POST', '/v1/agents', { agentId });
    const fresh = await connect(hearing, agentId, created.body.token);
    const witness = await witnessOn(hearing);
    const witnessEnds = ending(witness);

    for (const close of held) close();
    lateClose(hearing, witness.agentId);

    await expectKeptOnceHandled(fresh, witnessEnds);
  });

  it('keeps the connection of the newest token when a late close is handled on its own replica', async () => {
    const [, hearing] = fixture.hubs;
    const agentId = newAgentId('rotated');
    await register(hearing, agentId);
    // a rotation whose close is still to come (the store alone)
    const newest = mintAgentToken();
    expect(await hearing.agents.register(agentId, hashToken(newest))).toBe(false);
    const fresh = await connect(hearing, agentId, newest);
    const witness = await witnessOn(hearing);
    const witnessEnds = ending(witness);

    lateClose(hearing, agentId, witness.agentId);

    await expectKeptOnceHandled(fresh, witnessEnds);
  });
});

/**
 * A replica that cannot read the agent's record when a close of old tokens reaches it does not
 * know which token is current: it closes every connection of the agent, tells them nothing (the
 * token may be the current one), and each reconnects to have its handshake check its token.
 */
describe('a token rotation whose close meets an unreadable record', () => {
  const fixture = useTestHub();
  const { agents } = fixture;

  /** A connection with a newly registered agent's token, its `hub:error`s kept from the start. */
  async function connectNew(hub: TestHub, agentId: string) {
    const created = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', { agentId });
    expect(created.status).toBe(201);
    const agent = new TestAgent(hub.url, agentId, created.body.token);
    agents.push(agent);
    const errors: HubError[] = [];
    agent.socket.on('hub:error', (error) => errors.push(error));
    await agent.connect();
    await agent.recorded();
    return { agent, errors };
  }

  it('closes the agent’s connection without a hub:error, keeps serving, and takes the current token once the record reads again', async () => {
    const { hub, admin } = fixture;
    const agentId = `unreadable-${randomBytes(3).toString('hex')}`;
    const { agent, errors } = await connectNew(hub, agentId);
    const bystander = await connectNew(hub, `bystander-${randomBytes(3).toString('hex')}`);
    // a rotation (the store alone; its close is sent below): the connection's token is the old one
    const newest = mintAgentToken();
    expect(await hub.agents.register(agentId, hashToken(newest))).toBe(false);

    await becomeAclAdmin(admin);
    const recordKey = hub.keys.agent(agentId);
    await refuseKeyToHub(admin, recordKey);
    try {
      // Redis refuses the replica's read of the record
      await expect(hub.agents.get(agentId)).rejects.toThrow(/NOPERM/);
      const ends = agent.disconnected();

      new AgentControl(
        hub.agents,
        () => undefined,
        hub.gateway,
        async () => {},
      ).tokenReplaced(agentId);

      expect(await withTimeout(ends, 5000, 'the close of the agent’s connection')).toBe(
        'io server disconnect',
      );
      // the replica could not tell the connection its token was replaced: it told it nothing
      expect(errors).toEqual([]);
      // the replica still serves: its HTTP API, and another agent's events
      expect((await api(hub.url, 'GET', '/healthz', undefined, {})).status).toBe(200);
      expect(await bystander.agent.send('agent:heartbeat', {})).toMatchObject({
        ok: true,
        state: 'idle',
      });
      expect(bystander.agent.socket.connected).toBe(true);
      expect(bystander.errors).toEqual([]);
    } finally {
      await allowHubEveryKey(admin);
    }

    // the record reads again: the old token is refused at the handshake, the current one taken
    const stale = new TestAgent(hub.url, agentId, agent.token);
    agents.push(stale);
    const refused = await stale.connect().then(
      () => undefined,
      (err: { data?: unknown }) => err.data,
    );
    expect(refused).toMatchObject({ code: 'E_UNAUTHORIZED' });
    const current = new TestAgent(hub.url, agentId, newest);
    agents.push(current);
    await current.connect();
    expect(await current.send('agent:heartbeat', {})).toMatchObject({ ok: true, state: 'idle' });
    expect(await hub.agents.get(agentId)).toMatchObject({
      socketId: current.socket.id,
      tokenHash: hashToken(newest),
      state: 'idle',
    });
  });
});

import { AGENT_NAMESPACE, PROTOCOL_VERSION } from '@agentcom/shared';
import { io } from 'socket.io-client';
import type { Hub } from '../../hub/src/hub';
import { api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/**
 * Failed handshakes are limited per client address; behind a trusted proxy the address is the
 * one the proxy appended to X-Forwarded-For, whatever the client put before it.
 */
describe('handshake limit behind a trusted proxy (TRUST_PROXY=1)', () => {
  const LIMIT = 5;
  let redis: RedisProcess;
  let hub: Hub & { url: string };
  beforeAll(async () => {
    redis = await startRedis();
    hub = await startTestHub(redis.url, { TRUST_PROXY: '1', AUTH_FAIL_LIMIT: String(LIMIT) });
  });
  afterAll(async () => {
    await hub.close();
    await redis.dispose();
  });

  /** One handshake as it reaches the hub through the proxy: `connected` or the refusal's code. */
  const handshake = (agentId: string, token: string, forwardedFor: string) =>
    new Promise<string>((resolve) => {
      const socket = io(`${hub.url}${AGENT_NAMESPACE}`, {
        transports: ['websocket'],
        reconnection: false,
        extraHeaders: { 'x-forwarded-for': forwardedFor },
        auth: {
          agentId,
          token,
          protocol: PROTOCOL_VERSION,
          queues: ['default'],
          sidecarVersion: 't',
        },
      });
      socket.on('connect', () => {
        socket.disconnect();
        resolve('connected');
      });
      socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
        socket.disconnect();
        resolve(err.data?.code ?? err.message);
      });
    });

  it('counts the address the proxy saw: a client naming another address in front neither locks it out nor escapes the limit', async () => {
    const victim = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', {
      agentId: 'victim',
    });
    const attacker = '203.0.113.66'; // appended by the proxy; the first entry is the client's own
    const answers: string[] = [];
    for (let i = 0; i < LIMIT + 3; i++) {
      answers.push(await handshake('victim', 'agc_wrong', `10.1.2.3, ${attacker}`));
    }
    expect(answers).toEqual([
      ...Array<string>(LIMIT).fill('E_UNAUTHORIZED'),
      ...Array<string>(3).fill('E_RATE_LIMITED'),
    ]);
    // a new made-up address in front each time changes nothing
    expect(await handshake('victim', 'agc_wrong', `198.51.100.9, ${attacker}`)).toBe(
      'E_RATE_LIMITED',
    );
    // the address the attacker named is not limited
    expect(await handshake('victim', victim.body.token, '10.1.2.3')).toBe('connected');
  });
});

import { AGENT_NAMESPACE, PROTOCOL_VERSION } from '@agentcom/shared';
import { io } from 'socket.io-client';
import type { Hub } from '../../hub/src/hub';
import { api, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/**
 * An IPv6 client holds a whole /64 (one per home or cloud VM), and picks any address in it: the
 * handshake limit counts the /64, or each new address would bring a new allowance of guesses.
 */
describe('handshake limit for IPv6 clients (TRUST_PROXY=1)', () => {
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
        forceNew: true,
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

  it('counts the failures of a /64 together: a new address in the same /64 each try is still limited', async () => {
    const victim = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', {
      agentId: 'victim6',
    });
    const answers: string[] = [];
    for (let i = 1; i <= LIMIT + 3; i++) {
      // each try from another address of the attacker's /64, written as a proxy may write it
      const address = i % 2 ? `2001:db8:1:2::${i.toString(16)}` : `2001:db8:1:2:0:0:0:${i}`;
      answers.push(await handshake('victim6', 'agc_wrong', address));
    }
    expect(answers).toEqual([
      ...Array<string>(LIMIT).fill('E_UNAUTHORIZED'),
      ...Array<string>(3).fill('E_RATE_LIMITED'),
    ]);
    // the /64 is limited, the right token too; another /64 and IPv4 clients are not
    expect(await handshake('victim6', victim.body.token, '2001:db8:1:2:ffff::1')).toBe(
      'E_RATE_LIMITED',
    );
    expect(await handshake('victim6', victim.body.token, '2001:db8:1:3::1')).toBe('connected');
    expect(await handshake('victim6', victim.body.token, '198.51.100.20')).toBe('connected');
  });
});

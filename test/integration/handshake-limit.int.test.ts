import { AGENT_NAMESPACE, PROTOCOL_VERSION } from '@agentcom/shared';
import { Manager, io } from 'socket.io-client';
import { Redis } from 'ioredis';
import { HandshakeLimiter } from '../../hub/src/gateway/handshake-limiter';
import { RedisKeys } from '../../hub/src/redis/keys';
import { api } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { withTimeout } from '../helpers/test-agent';
import { useTestHub, type TestHub } from '../helpers/test-hub-fixture';

/**
 * Failed handshakes are limited per client address; behind a trusted proxy the address is the
 * one the proxy appended to X-Forwarded-For, whatever the client put before it. An IPv6 client
 * holds a whole /64 (one per home or cloud VM) and picks any address in it: the limit counts the
 * /64. Handshakes sent together are limited as if one after another.
 */
describe('handshake limit behind a trusted proxy (TRUST_PROXY=1)', () => {
  const LIMIT = 5;
  const fixture = useTestHub({ env: { TRUST_PROXY: '1', AUTH_FAIL_LIMIT: String(LIMIT) } });
  let hub: TestHub;
  beforeAll(() => ({ hub } = fixture));

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

  /**
   * Handshakes of `count` connections opened first (each its own Engine.IO connection), then sent
   * all at once: their answers, `connected` or the refusal's code.
   */
  const handshakesAtOnce = async (
    forwardedFor: string,
    auths: Array<{ agentId: string; token: string }>,
  ): Promise<string[]> => {
    const managers = auths.map(
      () =>
        new Manager(hub.url, {
          transports: ['websocket'],
          reconnection: false,
          forceNew: true,
          extraHeaders: { 'x-forwarded-for': forwardedFor },
        }),
    );
    try {
      await Promise.all(
        managers.map(
          (manager) =>
            new Promise<void>((resolve, reject) => {
              manager.once('open', () => resolve());
              manager.once('error', reject);
            }),
        ),
      );
      return await Promise.all(
        managers.map(
          (manager, i) =>
            new Promise<string>((resolve) => {
              const socket = manager.socket(AGENT_NAMESPACE, {
                auth: {
                  ...auths[i],
                  protocol: PROTOCOL_VERSION,
                  queues: ['default'],
                  sidecarVersion: 't',
                },
              });
              socket.on('connect', () => resolve('connected'));
              socket.on('connect_error', (err: Error & { data?: { code?: string } }) =>
                resolve(err.data?.code ?? err.message),
              );
            }),
        ),
      );
    } finally {
      for (const manager of managers) manager.engine?.close();
    }
  };

  it('checks no more tokens than the limit of handshakes sent together on connections opened first', async () => {
    await api(hub.url, 'POST', '/v1/agents', { agentId: 'burst-victim' });
    const answers = await handshakesAtOnce(
      '203.0.113.90',
      Array.from({ length: 40 }, () => ({ agentId: 'burst-victim', token: 'agc_wrong' })),
    );
    // each one that got its token checked was refused E_UNAUTHORIZED; the rest were not checked
    expect(answers.filter((a) => a === 'E_UNAUTHORIZED')).toHaveLength(LIMIT);
    expect(answers.filter((a) => a === 'E_RATE_LIMITED')).toHaveLength(40 - LIMIT);
  });

  it('lets in every honest agent of one address reconnecting together, past the limit in number', async () => {
    const auths = await Promise.all(
      Array.from({ length: 4 * LIMIT }, async (_, i) => {
        const agentId = `nat-agent-${i}`;
        const { body } = await api<{ token: string }>(hub.url, 'POST', '/v1/agents', { agentId });
        return { agentId, token: body.token };
      }),
    );
    const answers = await handshakesAtOnce('203.0.113.91', auths);
    expect(answers).toEqual(Array<string>(4 * LIMIT).fill('connected'));
  });
});

/** The limiter alone, on a real Redis, with token checks the test holds and lets go. */
describe('HandshakeLimiter with checks in flight', () => {
  let redis: RedisProcess;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.dispose();
  });

  /** A token check that ends when the test says so. */
  const heldCheck = () => {
    let end: () => void = () => undefined;
    const ended = new Promise<string>((resolve) => (end = () => resolve('checked')));
    return { check: () => ended, end };
  };

  it('wakes every check waiting for a slot when Redis fails the one woken first', async () => {
    const client = new Redis(redis.url);
    const limiter = new HandshakeLimiter(client, new RedisKeys('limiter-test'), 1);
    const first = heldCheck();
    const running = limiter.run('198.51.100.1', first.check);
    // the first holds the only slot: the next two wait for it (each has read the count once)
    const waiting = [
      limiter.run('198.51.100.1', async () => 'second'),
      limiter.run('198.51.100.1', async () => 'third'),
    ].map((run) =>
      run.then(
        () => 'ran',
        (err: Error) => err.message,
      ),
    );
    await client.ping(); // their reads of the count are answered by now
    client.disconnect(); // from here every command fails at once
    first.end();
    expect(await running).toBe('checked');
    // each woken one fails its read and wakes the next: none is left waiting
    expect(await withTimeout(Promise.all(waiting), 5000, 'both waiting checks settled')).toEqual([
      expect.stringContaining('Connection is closed'),
      expect.stringContaining('Connection is closed'),
    ]);
  });
});

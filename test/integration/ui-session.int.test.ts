import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Hub } from '../../hub/src/hub';
import { RedisKeys } from '../../hub/src/redis/keys';
import { NO_SESSION, UiSessions, uiSessionKey } from '../../hub/src/ui/ui-session';
import { TEST_ADMIN_KEY, startTestHub } from '../helpers/hub';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { UiClient, pageSession } from '../helpers/ui-client';

const ROTATED_ADMIN_KEY = 'rotated-admin-key-9876543210';

describe('agents page sessions', () => {
  let redis: RedisProcess;
  let admin: Redis;
  const hubs: Array<Hub & { url: string }> = [];
  const clients: UiClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url);
  });
  afterAll(async () => {
    for (const client of clients.splice(0)) client.close();
    for (const hub of hubs.splice(0)) await hub.close();
    admin?.disconnect();
    await redis?.dispose();
  });

  const uiClient = (hub: { url: string }, session: string): UiClient => {
    const client = new UiClient(hub.url, { session });
    clients.push(client);
    return client;
  };

  it('are refused by a replica started with another admin key, on the same Redis and prefix', async () => {
    const prefix = `uis${randomBytes(3).toString('hex')}`;
    const before = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix });
    hubs.push(before);
    const session = await pageSession(before.url);
    await uiClient(before, session).connected();
    await before.close();

    const after = await startTestHub(redis.url, {
      AGENTCOM_PREFIX: prefix,
      AGENTCOM_ADMIN_KEY: ROTATED_ADMIN_KEY,
    });
    hubs.push(after);
    // the session is still stored (it would live on for as long as a tab used it) ...
    expect(await admin.exists(uiSessionKey(after.keys, TEST_ADMIN_KEY, session))).toBe(1);
    // ... and is no session under the new key
    await expect(uiClient(after, session).connected()).rejects.toMatchObject({
      data: { code: 'E_UNAUTHORIZED' },
    });
    // a page loaded with the new key gets a session that works
    const page = await fetch(`${after.url}/`, {
      headers: { authorization: `Bearer ${ROTATED_ADMIN_KEY}` },
    });
    expect(page.status).toBe(200);
    const fresh = /"session":"(uis_[A-Za-z0-9_-]+)"/.exec(await page.text())?.[1];
    await uiClient(after, fresh ?? '').connected();
  });

  it('end at their maximum lifetime however often they are used', async () => {
    const keys = new RedisKeys(`uis${randomBytes(3).toString('hex')}`);
    let now = 1_000_000;
    const sessions = new UiSessions({
      redis: admin,
      keys,
      hubId: 'lifetime-test',
      adminKey: TEST_ADMIN_KEY,
      ttlMs: 60_000,
      maxLifetimeMs: 5000,
      now: () => now,
    });
    const token = await sessions.mint();
    const key = uiSessionKey(keys, TEST_ADMIN_KEY, token);
    // used all along: each use restarts its TTL, until the lifetime is over
    for (let used = 0; used < 5; used++) {
      now += 999;
      await admin.pexpire(key, 1000);
      expect(await sessions.touch(token)).toBe(true);
      expect(await admin.pttl(key)).toBeGreaterThan(50_000);
    }
    now = 1_000_000 + 4999;
    expect(await sessions.touch(token)).toBe(true);
    now = 1_000_000 + 5000;
    expect(await sessions.touch(token)).toBe(false);
    expect(await admin.exists(key)).toBe(0);
  });
  it('are not minted for HEAD: the page answers with its GET headers, and nothing is written', async () => {
    const prefix = `uis${randomBytes(3).toString('hex')}`;
    const hub = await startTestHub(redis.url, { AGENTCOM_PREFIX: prefix });
    hubs.push(hub);
    const sessionKeys = () => admin.keys(hub.keys.uiSession('*'));
    const authorization = `Bearer ${TEST_ADMIN_KEY}`;

    const head = await fetch(`${hub.url}/`, { method: 'HEAD', headers: { authorization } });
    expect(head.status).toBe(200);
    expect(await sessionKeys()).toEqual([]);
    expect(
      await new UiSessions({
        redis: admin,
        keys: hub.keys,
        hubId: 'x',
        adminKey: TEST_ADMIN_KEY,
      }).touch(NO_SESSION),
    ).toBe(false);

    const get = await fetch(`${hub.url}/`, { headers: { authorization } });
    expect(get.status).toBe(200);
    expect(await sessionKeys()).toHaveLength(1);
    for (const header of ['content-type', 'content-length', 'cache-control']) {
      expect([header, head.headers.get(header)]).toEqual([header, get.headers.get(header)]);
    }
  });
});

import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisKeys } from '../../hub/src/redis/keys';
import { MAX_RETRY_MS } from '../../hub/src/tasks/deferred-settles';
import {
  IDEMPOTENCY_TTL_MS,
  IdempotencyKeys,
  UNFINISHED_IDEMPOTENCY_TTL_MS,
} from '../../hub/src/tasks/idempotency-keys';
import { RecordedSettles } from '../../hub/src/tasks/recorded-settles';
import { allowHubEveryKey, becomeAclAdmin, refuseHubWritesTo } from '../helpers/acl';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/**
 * The settles of idempotency keys Redis refused, recorded in Redis for any replica to run again
 * (`RecordedSettles`), and kept in the replica while Redis refuses the record too: on a Redis of
 * their own, without a hub (no sweeper runs them but the test's own calls).
 */
describe('deferred settles recorded in Redis', () => {
  let redis: RedisProcess;
  /** A user of the test's own: the ACL restricts `default`, the user of `client`. */
  let admin: Redis;
  let client: Redis;
  let keys: RedisKeys;

  beforeAll(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    await becomeAclAdmin(admin);
    // fails at once while disconnected: a Redis that is away
    client = new Redis(redis.url, { enableOfflineQueue: false, lazyConnect: true });
    await client.connect();
  });
  beforeEach(() => {
    keys = new RedisKeys(`t${randomBytes(3).toString('hex')}`);
  });
  afterEach(async () => {
    await allowHubEveryKey(admin);
  });
  afterAll(async () => {
    client.disconnect();
    await admin.quit();
    await redis.dispose();
  });

  it('keeps a settle whose record Redis refused too, and records it once Redis takes the record', async () => {
    const idempotency = new IdempotencyKeys({ redis: client, keys });
    const dedupKey = keys.bullDeduplication('q', 'k1');
    // the key of a task whose job went at its end (no retention), as it was created
    const holdKey = () => admin.set(dedupKey, 't1', 'PX', UNFINISHED_IDEMPOTENCY_TTL_MS);
    await holdKey();

    const ended = new Promise((resolve) => client.once('end', resolve));
    client.disconnect(); // the settle and its record both fail
    await ended;
    expect(await idempotency.settle('q', 't1', 'k1')).toBe('deferred');
    await client.connect();
    expect(await admin.zcard(keys.deferredSettles)).toBe(0); // kept in memory only

    // Redis is back, but refuses the key's write: the settle fails again, its record goes in
    await refuseHubWritesTo(admin, dedupKey);
    await idempotency.settleDeferred(Date.now() + 2000);
    const [member] = await admin.zrange(keys.deferredSettles, '0', '-1');
    expect(JSON.parse(member ?? '[]')).toEqual(['q', 't1', 'k1', expect.any(Number)]);
    expect(await admin.pttl(dedupKey)).toBeGreaterThan(IDEMPOTENCY_TTL_MS);

    // any replica's pass runs the record (another IdempotencyKeys: this one's memory is empty)
    await allowHubEveryKey(admin);
    const other = new IdempotencyKeys({ redis: client, keys });
    await other.settleDeferred(Date.now() + 10_000);
    expect(await admin.zcard(keys.deferredSettles)).toBe(0);
    // the job is gone (never created here): settled as finished now, for 24 h
    expect(await admin.get(dedupKey)).toBe('t1');
    const ttl = await admin.pttl(dedupKey);
    expect(ttl).toBeGreaterThan(IDEMPOTENCY_TTL_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(IDEMPOTENCY_TTL_MS);
    // nothing left to run in the first one's memory either: a run would shorten the key again
    await holdKey();
    await idempotency.settleDeferred(Date.now() + 600_000);
    expect(await admin.pttl(dedupKey)).toBeGreaterThan(IDEMPOTENCY_TTL_MS);
    expect(await admin.zcard(keys.deferredSettles)).toBe(0);
  });

  it('run late, a settle of a gone job shortens the key its task holds, and creates no missing one', async () => {
    const idempotency = new IdempotencyKeys({ redis: client, keys });
    const recorded = new RecordedSettles(client, keys.deferredSettles);
    const [held, freed, other] = ['k1', 'k2', 'k3'].map((k) => keys.bullDeduplication('q', k));
    const now = Date.now();
    await admin.set(held!, 't1', 'PX', UNFINISHED_IDEMPOTENCY_TTL_MS);
    await admin.set(other!, 'another task', 'PX', UNFINISHED_IDEMPOTENCY_TTL_MS);
    // t1's job went at its end; t2's key was freed (its task removed); t3's names another task
    for (const n of [1, 2, 3]) await recorded.add('q', `t${n}`, `k${n}`, now);

    await idempotency.settleDeferred(now + 1000);
    expect(await admin.zcard(keys.deferredSettles)).toBe(0); // all went through
    const ttl = await admin.pttl(held!);
    expect(ttl).toBeGreaterThan(IDEMPOTENCY_TTL_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(IDEMPOTENCY_TTL_MS);
    expect(await admin.exists(freed!)).toBe(0);
    expect(await admin.pttl(other!)).toBeGreaterThan(IDEMPOTENCY_TTL_MS);
    // never lengthened: a key with less than a day left keeps it
    await admin.set(held!, 't1', 'PX', 60_000);
    await recorded.add('q', 't1', 'k1', now);
    await idempotency.settleDeferred(now + 1000);
    expect(await admin.pttl(held!)).toBeLessThanOrEqual(60_000);
  });

  it('records at most 10,000', async () => {
    const recorded = new RecordedSettles(client, keys.deferredSettles);
    const now = Date.now();
    const members = Array.from({ length: 9_999 }, (_, i) => [now, `["q","t${i}","k${i}",${now}]`]);
    await admin.zadd(keys.deferredSettles, ...members.flat());
    expect(await recorded.add('q', 'last', 'k', now)).toBe('recorded');
    expect(await recorded.add('q', 'one more', 'k', now)).toBe('full');
    expect(await admin.zcard(keys.deferredSettles)).toBe(10_000);
    expect(await recorded.due(now + 1000, 500)).toHaveLength(500);
  });

  it('waits as long as a settle has been failing, 1 s to 5 min; one done meanwhile stays done', async () => {
    const recorded = new RecordedSettles(client, keys.deferredSettles);
    const start = Date.now();
    await recorded.add('q', 't1', 'k1', start);
    const dueAt = async () => Number(await admin.zscore(keys.deferredSettles, member));
    expect(await recorded.due(start + 999, 10)).toEqual([]);
    const [entry] = await recorded.due(start + 1000, 10);
    const member = entry!.member;
    expect(entry).toMatchObject({ queue: 'q', taskId: 't1', idempotencyKey: 'k1', since: start });

    await recorded.failedAgain(entry!, start + 1000);
    expect(await dueAt()).toBe(start + 2000);
    await recorded.failedAgain(entry!, start + 2000);
    expect(await dueAt()).toBe(start + 4000);
    await recorded.failedAgain(entry!, start + 3_600_000);
    expect(await dueAt()).toBe(start + 3_600_000 + 5 * 60 * 1000);
    // a failure of a run listed earlier, ending after that one: it does not bring it forward
    await recorded.failedAgain(entry!, start + 5000);
    expect(await dueAt()).toBe(start + 3_600_000 + 5 * 60 * 1000);

    // listed as due at 4 s by a replica whose run went through, while another's failed since
    await recorded.done({ ...entry!, dueAt: start + 4000 });
    expect(await admin.zcard(keys.deferredSettles)).toBe(1); // run again, to no harm
    await recorded.done({ ...entry!, dueAt: await dueAt() });
    expect(await admin.zcard(keys.deferredSettles)).toBe(0);
    await recorded.failedAgain(entry!, start + 4000); // a late failure does not bring it back
    expect(await admin.zcard(keys.deferredSettles)).toBe(0);
  });

  it('puts off the members it cannot read, so that they hide no readable one', async () => {
    const idempotency = new IdempotencyKeys({ redis: client, keys });
    const dedupKey = keys.bullDeduplication('q', 'k1');
    await admin.set(dedupKey, 't1', 'PX', UNFINISHED_IDEMPOTENCY_TTL_MS);
    const now = Date.now();
    // a pass's worth of members of another format (a later version's, or corrupt), due first
    const unreadable = Array.from({ length: 500 }, (_, i) =>
      i % 2 ? `{"version":2,"settle":${i}}` : `not json ${i}`,
    );
    await admin.zadd(keys.deferredSettles, ...unreadable.flatMap((m) => [now - 5000, m]));
    await new RecordedSettles(client, keys.deferredSettles).add('q', 't1', 'k1', now - 1000);

    await idempotency.settleDeferred(now); // lists the unreadable ones only
    expect(await admin.pttl(dedupKey)).toBeGreaterThan(IDEMPOTENCY_TTL_MS);
    // the old code left them due: every pass listed them again, and never the readable one
    await idempotency.settleDeferred(now);
    expect(await admin.pttl(dedupKey)).toBeLessThanOrEqual(IDEMPOTENCY_TTL_MS);
    expect(await admin.zcard(keys.deferredSettles)).toBe(500);
    // left for a replica that can read them, due again later
    const later = now + MAX_RETRY_MS;
    expect(await admin.zcount(keys.deferredSettles, later, later)).toBe(500);
  });
});

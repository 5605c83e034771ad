import { Redis } from 'ioredis';
import { readIdsAfter, type ListingPosition } from '../../hub/src/tasks/listing-position';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/**
 * `readIdsAfter` (`idsAfter.lua`) on a list and a sorted set shaped as BullMQ's, with jobs
 * leaving and entering between reads where the listing's own tests cannot put them: among jobs of
 * one score, and both jobs a list position names.
 */
describe('reading job ids after a listing position', () => {
  let server: RedisProcess;
  let redis: Redis;
  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
  });
  afterAll(async () => {
    redis.disconnect();
    await server.dispose();
  });

  /**
   * Reads `p:<type>` two ids at a time to its end, running `between` before each read after the
   * first (`p:` stands for a queue's BullMQ key prefix; its job hashes `p:<id>` do not exist here).
   */
  const walk = async (type: string, between: (read: number) => Promise<unknown>) => {
    const listed: string[] = [];
    let at: ListingPosition | undefined;
    for (let read = 0; read < 20; read++) {
      if (read > 0) await between(read);
      const page = await readIdsAfter(redis, 'p:', type, at, 2);
      listed.push(...page.ids);
      at = page.end;
      if (!at) break;
    }
    return listed;
  };

  it('goes on after the last id read in a sorted set, ties of one score in byte order, whether it is still there or not', async () => {
    // one score for most: Redis orders them by bytes ("B" < "D" < "a" < "ab" < "c")
    await redis.zadd('p:z', 5, 'a', 5, 'ab', 5, 'B', 5, 'c', 5, 'D', 7, 'e', 9, 'f');
    const listed = await walk('z', async (read) => {
      if (read === 1) {
        // after B, D: D leaves; C enters before where the walk is, b after it
        await redis.zrem('p:z', 'D');
        await redis.zadd('p:z', 5, 'C', 5, 'b');
      }
      if (read === 2) await redis.zrem('p:z', 'B', 'a'); // after a, ab: two read before leave
    });
    expect(listed).toEqual(['B', 'D', 'a', 'ab', 'b', 'c', 'e', 'f']);
  });

  it('goes on in a list at the id after the last one read when that one left, and from the oldest when both left from the oldest end', async () => {
    // as BullMQ's wait list: pushed at the head (left), the oldest (j1) at the tail
    await redis.lpush('p:l', 'j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'j7', 'j8', 'j9');
    const listed = await walk('l', async (read) => {
      if (read === 1) {
        // after j1, j2: j2 leaves from the middle, j1 stays; one enters at each end
        await redis.lrem('p:l', 1, 'j2');
        await redis.lpush('p:l', 'n1');
        await redis.rpush('p:l', 'back');
      }
      // after j3, j4: taken from the oldest end up to j5, the job after them
      if (read === 2)
        for (const id of ['back', 'j1', 'j3', 'j4', 'j5']) expect(await redis.rpop('p:l')).toBe(id);
    });
    expect(listed).toEqual(['j1', 'j2', 'j3', 'j4', 'j6', 'j7', 'j8', 'j9', 'n1']);
  });

  it('starts a list over from the oldest when both jobs the position names were removed from its middle: it lists again jobs read before, and misses none', async () => {
    // no position of bounded size tells the jobs read from the others once both are gone
    await redis.lpush('p:both', 'j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'j7', 'j8');
    const listed = await walk('both', async (read) => {
      // after j3, j4 (j5 next): the last one read and the one after it are cancelled
      if (read === 2) expect(await redis.lrem('p:both', 1, 'j4')).toBe(1);
      if (read === 2) expect(await redis.lrem('p:both', 1, 'j5')).toBe(1);
    });
    expect(listed).toEqual(['j1', 'j2', 'j3', 'j4', 'j1', 'j2', 'j3', 'j6', 'j7', 'j8']);
  });

  it('finds in a list jobs whose ids are too long to name in a cursor, by digest', async () => {
    // of one length and one long prefix, but for their last character; and of multibyte ones
    const long = (last: string) => 'x'.repeat(999) + last;
    const [a, b, d, e, g] = [long('1'), long('2'), long('3'), 'é'.repeat(2500), 'g'.repeat(5000)];
    await redis.lpush('p:long', a, b, 'c', d, e, 'f');
    const listed = await walk('long', async (read) => {
      if (read === 1) {
        // after a, b (c next): b leaves from the middle; one enters at the newest end
        expect(await redis.lrem('p:long', 1, b)).toBe(1);
        await redis.lpush('p:long', g);
      }
      if (read === 2) {
        // after c, d (e next): one taken from the oldest end, one handed back there
        expect(await redis.rpop('p:long')).toBe(a);
        await redis.rpush('p:long', 'back');
      }
      // after e, f (g next): f leaves from the middle
      if (read === 3) expect(await redis.lrem('p:long', 1, 'f')).toBe(1);
    });
    expect(listed).toEqual([a, b, 'c', d, e, 'f', g]);
  });

  it('goes on in a sorted set after a job whose id is too long to name in a cursor, and from the first of its score and prefix when it is gone', async () => {
    // one score for most, in byte order: "a" < ka < kb < kc < kd < m < "z"; k* share a prefix
    // longer than a cursor keeps of a long id
    const k = (last: string) => 'k'.repeat(200) + last;
    const [ka, kb, kc, kd] = [k('a'), k('b'), k('c'), k('d')];
    const [m, q] = ['m'.repeat(300), 'q'.repeat(1000)];
    await redis.zadd('p:lz', 5, kc, 5, 'z', 5, ka, 5, m, 5, 'a', 5, kd, 5, kb, 7, q, 9, 'f');
    const listed = await walk('lz', async (read) => {
      // after kb, kc: kc leaves; where it was among the ids of its prefix is not known any more,
      // so the walk goes on from the first of them, ka
      if (read === 2) expect(await redis.zrem('p:lz', kc)).toBe(1);
    });
    expect(listed).toEqual(['a', ka, kb, kc, ka, kb, kd, m, 'z', q, 'f']);
  });

  it('reads nothing from a key with no jobs', async () => {
    expect(await readIdsAfter(redis, 'p:', 'none', undefined, 5)).toEqual({ ids: [] });
    expect(await readIdsAfter(redis, 'p:', 'none', { last: 'x', score: 1 }, 5)).toEqual({
      ids: [],
    });
  });
});

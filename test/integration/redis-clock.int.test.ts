import { Redis } from 'ioredis';
import { RedisClock } from '../../hub/src/redis/redis-clock';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** Redis's clock read locally, against a real Redis, on a machine clock the test skews. */
describe('RedisClock', () => {
  let server: RedisProcess;
  let redis: Redis;
  /** What the test adds to this machine's clock. */
  let skewMs = 0;
  const localNow = (): number => Date.now() + skewMs;
  const redisTime = async (): Promise<number> => {
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1000 + Number(micros) / 1000;
  };
  /** Measures while the machine's clock jumps `jumpMs` ahead: the answer looks that much slower. */
  const measureAcrossJump = async (clock: RedisClock, jumpMs: number): Promise<number> => {
    const measuring = clock.measure(); // the send time is read before this returns
    skewMs += jumpMs;
    return measuring;
  };

  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    redis.disconnect();
    await server.dispose();
  });
  beforeEach(() => {
    skewMs = 0;
  });

  it("answers Redis's time on a machine whose clock is 20 s off, once measured", async () => {
    skewMs = 20_000;
    const clock = new RedisClock({ redis, localNow });
    expect(clock.measured).toBe(false);
    expect(Math.abs(clock.now() - localNow())).toBeLessThan(50); // the local clock until then

    const offset = await clock.measure();

    expect(clock.measured).toBe(true);
    expect(Math.abs(offset + 20_000)).toBeLessThan(100);
    const before = await redisTime();
    const now = clock.now();
    const after = await redisTime();
    expect(now).toBeGreaterThanOrEqual(before - 100);
    expect(now).toBeLessThanOrEqual(after + 100);
  });

  it('keeps an answer slower than a second only while it has no other', async () => {
    const clock = new RedisClock({ redis, localNow });
    const first = await clock.measure();
    expect(Math.abs(first)).toBeLessThan(100);

    // a stall: the offset halfway through it may be off by seconds, the one before stands
    expect(await measureAcrossJump(clock, 1500)).toBe(first);

    // a prompt answer is kept again (the machine's clock is 1.5 s ahead since the jump)
    expect(Math.abs((await clock.measure()) + 1500)).toBeLessThan(100);

    // a clock measured only slowly keeps that measurement
    const slowOnly = new RedisClock({ redis, localNow });
    const kept = await measureAcrossJump(slowOnly, 1500);
    expect(slowOnly.measured).toBe(true);
    // halfway through the apparent round trip: about 750 ms before the clock's jump
    expect(Math.abs(kept + 1500 + 750)).toBeLessThan(200);
  });
});

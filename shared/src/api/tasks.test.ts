import { MAX_RETRY_DELAY_MS, createTaskBodySchema, longestRetryDelayMs } from './tasks';

describe('a task body with retries', () => {
  const exponential = (delayMs: number) => ({ type: 'exponential' as const, delayMs });

  it('waits before its last retry as BullMQ computes it', () => {
    // BullMQ: retry n waits 2^(n-1) x delay; 4 attempts make 3 retries: 1 s, 2 s, 4 s
    expect(longestRetryDelayMs(4, exponential(1000))).toBe(4000);
    expect(longestRetryDelayMs(4, { type: 'fixed', delayMs: 1000 })).toBe(1000);
    expect(longestRetryDelayMs(1, exponential(1000))).toBe(0);
    expect(longestRetryDelayMs(100, undefined)).toBe(0);
  });

  it('takes exponential backoff up to 7 days before the last retry and refuses one more', () => {
    // 21 attempts at 1 s: 2^19 s (6.07 days) before the last; 22: 2^20 s (12.1 days)
    const at = (attempts: number) =>
      createTaskBodySchema.safeParse({ payload: 1, attempts, backoff: exponential(1000) });
    expect(at(21).success).toBe(true);
    const refused = at(22);
    expect(refused.success).toBe(false);
    expect(refused.error?.issues[0]).toMatchObject({ path: ['backoff'] });
    expect(refused.error?.issues[0]?.message).toContain(String(MAX_RETRY_DELAY_MS));
  });

  it('takes the most attempts with fixed backoff or none', () => {
    for (const backoff of [undefined, { type: 'fixed', delayMs: 24 * 60 * 60 * 1000 }]) {
      expect(createTaskBodySchema.safeParse({ payload: 1, attempts: 100, backoff }).success).toBe(
        true,
      );
    }
  });
});

import {
  MAX_RETRY_DELAY_MS,
  createTaskBodySchema,
  listTasksQuerySchema,
  longestRetryDelayMs,
  taskLogsQuerySchema,
} from './tasks';

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

describe("the task routes' query numbers", () => {
  it('take plain decimal integers in range, with their defaults', () => {
    expect(taskLogsQuerySchema.parse({})).toEqual({ start: 0, limit: 100 });
    expect(taskLogsQuerySchema.parse({ start: '16', limit: '1000' })).toEqual({
      start: 16,
      limit: 1000,
    });
    expect(listTasksQuerySchema.parse({ limit: '500' })).toEqual({ limit: 500 });
  });

  it('refuse anything else, naming the parameter (`0x10` was read as 16)', () => {
    const refused = (
      schema: typeof taskLogsQuerySchema | typeof listTasksQuerySchema,
      query: object,
    ) => schema.safeParse(query).error?.issues.map((issue) => issue.path.join('.'));
    expect(refused(taskLogsQuerySchema, { start: '0x10' })).toEqual(['start']);
    expect(refused(taskLogsQuerySchema, { start: '' })).toEqual(['start']);
    expect(refused(taskLogsQuerySchema, { limit: '1e2' })).toEqual(['limit']);
    expect(refused(taskLogsQuerySchema, { limit: '1001' })).toEqual(['limit']);
    expect(refused(listTasksQuerySchema, { limit: ' 5' })).toEqual(['limit']);
    expect(refused(listTasksQuerySchema, { limit: '5.0' })).toEqual(['limit']);
  });
});

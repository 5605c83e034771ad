import {
  DISCONNECTS_BOUND_MS,
  StopBudget,
  exitDeadlineMs,
  httpCloseBoundMs,
  redisStopBudgetMs,
} from './stop-bounds';

const never = new Promise<void>(() => undefined);

describe('bounds of a graceful stop', () => {
  it('puts the exit deadline past the delay, whatever the delay', () => {
    expect(exitDeadlineMs({ shutdownDelayMs: 0, shutdownGraceMs: 10_000 })).toBe(15_000);
    expect(exitDeadlineMs({ shutdownDelayMs: 20_000, shutdownGraceMs: 10_000 })).toBe(35_000);
  });

  it.each([0, 1000, 4000, 10_000, 60_000])(
    'keeps the waits after the delay below the deadline (grace %i ms)',
    (shutdownGraceMs) => {
      const timings = { shutdownDelayMs: 3000, shutdownGraceMs };
      const afterDelay =
        redisStopBudgetMs(timings) + httpCloseBoundMs(timings) + DISCONNECTS_BOUND_MS;
      expect(afterDelay).toBeLessThan(exitDeadlineMs(timings) - timings.shutdownDelayMs);
    },
  );

  it('shares one budget among the waits: once spent, the next wait is not waited for', async () => {
    const givenUp: string[] = [];
    // the budget's own clock: each wait that settles spends 10 ms of it
    let clock = 0;
    const spend10 = () => (clock += 10);
    const budget = new StopBudget(
      100,
      (what) => givenUp.push(what),
      () => clock,
    );
    expect(await budget.wait('answered', Promise.resolve().then(spend10))).toBe(true);
    expect(
      await budget.wait(
        'failed',
        Promise.resolve().then(() => {
          spend10();
          throw new Error('closed');
        }),
      ),
    ).toBe(true);
    expect(budget.remainingMs()).toBe(80);
    // what is left is waited for on a real timer (which may fire up to 1 ms early)
    const started = performance.now();
    expect(await budget.wait('frozen', never)).toBe(false);
    expect(performance.now() - started).toBeGreaterThanOrEqual(79);
    expect(budget.remainingMs()).toBe(0);
    // not waited for: a wait of 0 ms, whatever the machine's load
    expect(await budget.wait('after', never)).toBe(false);
    expect(givenUp).toEqual(['frozen', 'after']);
  });
});

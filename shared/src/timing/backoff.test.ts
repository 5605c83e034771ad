import { backoffMs } from './backoff';

describe('backoffMs', () => {
  const at = (r: number) => () => r;

  it('doubles the base at each further try', () => {
    const delays = [1, 2, 3, 4].map((attempt) =>
      backoffMs(attempt, { baseMs: 100, random: at(0.5) }),
    );
    expect(delays).toEqual([100, 200, 400, 800]);
  });

  it('spreads each delay over ±50 %', () => {
    expect(backoffMs(2, { baseMs: 100, random: at(0) })).toBe(100);
    expect(backoffMs(2, { baseMs: 100, random: at(0.999) })).toBe(300);
    const seen = Array.from({ length: 500 }, () => backoffMs(3, { baseMs: 100 }));
    expect(Math.min(...seen)).toBeGreaterThanOrEqual(200);
    expect(Math.max(...seen)).toBeLessThanOrEqual(600);
    expect(new Set(seen).size).toBeGreaterThan(50); // jittered, not one value
  });

  it('caps the delay, jitter included, and stays finite for any attempt', () => {
    expect(backoffMs(10, { baseMs: 100, maxMs: 5000, random: at(0.999) })).toBe(5000);
    expect(backoffMs(1e9, { baseMs: 100, maxMs: 5000, random: at(0) })).toBe(5000);
    expect(Number.isFinite(backoffMs(1e9, { baseMs: 1, random: at(0) }))).toBe(true);
  });

  it('takes an attempt below 1 as the first', () => {
    expect(backoffMs(0, { baseMs: 100, random: at(0.5) })).toBe(100);
  });
});

import { DeferredSettles } from './deferred-settles';

describe('DeferredSettles', () => {
  it('runs a failed settle again 1 s later, twice as long after each further failure, at most 5 min', () => {
    const deferred = new DeferredSettles();
    const start = Date.now();
    deferred.add('q', 't1', 'k1', new Error('NOPERM'));
    expect(deferred.due(start, 10)).toEqual([]);
    const [entry] = deferred.due(start + 1100, 10);
    expect(entry).toMatchObject({ queue: 'q', taskId: 't1', idempotencyKey: 'k1', failures: 1 });
    deferred.failedAgain(entry!);
    expect(deferred.due(start + 1100, 10)).toEqual([]);
    expect(deferred.due(Date.now() + 2100, 10)).toHaveLength(1);
    for (let i = 0; i < 30; i++) deferred.failedAgain(entry!);
    expect(entry!.dueAt - Date.now()).toBeLessThanOrEqual(5 * 60 * 1000);
    expect(entry!.dueAt - Date.now()).toBeGreaterThan(5 * 60 * 1000 - 1000);
  });

  it('forgets a settle that went through, not the newer failure of the same task', () => {
    const deferred = new DeferredSettles();
    deferred.add('q', 't1', 'k1', 'first');
    const [first] = deferred.due(Date.now() + 2000, 10);
    deferred.add('q', 't1', 'k1', 'again, while the first ran'); // replaces it
    deferred.done(first!);
    expect(deferred.size).toBe(1);
    const [again] = deferred.due(Date.now() + 10_000, 10);
    expect(again!.failures).toBe(2);
    deferred.done(again!);
    expect(deferred.size).toBe(0);
  });

  it('keeps at most 10,000, and hands out at most the limit, oldest first', () => {
    const deferred = new DeferredSettles();
    for (let i = 0; i < 10_001; i++) deferred.add('q', `t${i}`, `k${i}`, 'refused');
    expect(deferred.size).toBe(10_000);
    const due = deferred.due(Date.now() + 2000, 500);
    expect(due).toHaveLength(500);
    expect(due[0]!.taskId).toBe('t0');
  });
});

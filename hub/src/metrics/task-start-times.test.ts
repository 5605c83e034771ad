import { TaskStartTimes } from './task-start-times';

describe('TaskStartTimes', () => {
  let clock = 0;

  it('answers the time since a task was started once, then forgets it', () => {
    const starts = new TaskStartTimes(10, () => clock);
    clock = 100;
    starts.start('a');
    clock = 100.25;
    expect(starts.takeElapsedMs('a')).toBeCloseTo(0.25);
    expect(starts.takeElapsedMs('a')).toBeUndefined();
    expect(starts.size).toBe(0);
  });

  it('forgets a start whose add created no task (failed, or an idempotent duplicate)', () => {
    const starts = new TaskStartTimes(10, () => clock);
    starts.start('a');
    starts.start('b');
    starts.forget('a');
    starts.forget('unknown');
    expect(starts.size).toBe(1);
    expect(starts.takeElapsedMs('a')).toBeUndefined();
    expect(starts.takeElapsedMs('b')).toBeDefined();
  });

  it('keeps at most `capacity` starts, dropping the oldest (tasks pushed by other replicas)', () => {
    const starts = new TaskStartTimes(2, () => clock);
    for (const id of ['a', 'b', 'c']) starts.start(id);
    expect(starts.size).toBe(2);
    expect(starts.takeElapsedMs('a')).toBeUndefined();
    expect(starts.takeElapsedMs('c')).toBeDefined();
  });
});

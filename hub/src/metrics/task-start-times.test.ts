import { TaskStartTimes } from './task-start-times';

describe('TaskStartTimes', () => {
  let clock = 0;
  const job = (id: string, opts: { delay?: number; jobId?: string } = {}) => ({
    id,
    opts: { jobId: id, ...opts },
  });

  it('answers the time since a task was added once, then forgets it', () => {
    const starts = new TaskStartTimes(10, () => clock);
    clock = 100;
    starts.added(job('a'));
    clock = 100.25;
    expect(starts.takeElapsedMs('a')).toBeCloseTo(0.25);
    expect(starts.takeElapsedMs('a')).toBeUndefined();
    expect(starts.size).toBe(0);
  });

  it('leaves out delayed jobs and idempotent duplicates (BullMQ answers the earlier job)', () => {
    const starts = new TaskStartTimes(10, () => clock);
    starts.added(job('delayed', { delay: 1000 }));
    starts.added(job('earlier', { jobId: 'new-uuid' }));
    expect(starts.size).toBe(0);
    expect(starts.takeElapsedMs('delayed')).toBeUndefined();
    expect(starts.takeElapsedMs('earlier')).toBeUndefined();
  });

  it('keeps at most `capacity` starts, dropping the oldest (tasks pushed by other replicas)', () => {
    const starts = new TaskStartTimes(2, () => clock);
    for (const id of ['a', 'b', 'c']) starts.added(job(id));
    expect(starts.size).toBe(2);
    expect(starts.takeElapsedMs('a')).toBeUndefined();
    expect(starts.takeElapsedMs('c')).toBeDefined();
  });
});

import { readTaskData, shownTaskData } from './task-data';

describe('readTaskData', () => {
  it('reads what the task API writes', () => {
    const data = { payload: { repo: 'x' }, labels: { team: 'a' }, timeoutMs: 60_000 };
    expect(readTaskData(data)).toEqual({ data });
    expect(readTaskData({ payload: 'just text' })).toEqual({ data: { payload: 'just text' } });
  });

  it('takes an object without a payload as a task with none (null)', () => {
    expect(readTaskData({})).toEqual({ data: { payload: null } });
    expect(readTaskData({ other: 1 })).toEqual({ data: { payload: null } });
  });

  it.each([
    [null, 'its data is null, not an object'],
    ['text', 'its data is string, not an object'],
    [42, 'its data is number, not an object'],
    [[1, 2], 'its data is an array, not an object'],
    [undefined, 'its data is undefined, not an object'],
  ])('refuses data that is no object (%j)', (raw, problem) => {
    expect(readTaskData(raw)).toEqual({ problem });
  });

  it.each([
    [{ payload: 1, labels: { team: 5 } }, /labels/],
    [{ payload: 1, labels: 'a' }, /labels/],
    [{ payload: 1, labels: { ['__proto__']: 'x' } }, /labels/],
    [{ payload: 1, timeoutMs: '60000' }, /timeoutMs/],
    [{ payload: 1, timeoutMs: 1.5 }, /timeoutMs/],
    [{ payload: 1, timeoutMs: 0 }, /timeoutMs/],
    [{ payload: 1, timeoutMs: 8 * 24 * 60 * 60 * 1000 }, /timeoutMs/],
  ])('refuses labels or a run timeout that are no task’s (%j)', (raw, problem) => {
    const read = readTaskData(raw);
    expect('problem' in read && read.problem).toMatch(problem);
  });
});

describe('shownTaskData', () => {
  it('shows data that is no task’s whole, as the payload', () => {
    expect(shownTaskData(null)).toEqual({ payload: null });
    expect(shownTaskData(['a'])).toEqual({ payload: ['a'] });
    expect(shownTaskData({ payload: 1, labels: 7 })).toEqual({
      payload: { payload: 1, labels: 7 },
    });
    expect(shownTaskData({ payload: 2 })).toEqual({ payload: 2 });
  });
});

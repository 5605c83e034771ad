import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LineTail, MAX_STDOUT_LINE_BYTES, STDERR_TAIL_LINES, exitOutcome } from './task-output';

/**
 * V8's garbage collector, for a test that measures what stays reachable: jest runs without
 * `--expose-gc`, and a context created after the flag is set gets `gc` all the same.
 */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe('LineTail', () => {
  it('keeps the last lines, each cut to 2000 characters', () => {
    const tail = new LineTail(2);
    tail.push('one');
    tail.push('  ');
    tail.push('x'.repeat(2500));
    tail.push('three');
    expect(tail.text()).toBe(`${'x'.repeat(2000)}…\nthree`);
  });

  it('does not end a cut line inside a surrogate pair', () => {
    const tail = new LineTail();
    tail.push(`${'x'.repeat(1999)}${'😀'.repeat(10)}`);
    expect(tail.text()).toBe(`${'x'.repeat(1999)}…`);
  });

  it('holds cut lines at their cut length, not at the length they were pushed with', () => {
    const gc = collector();
    const tail = new LineTail();
    gc();
    const before = process.memoryUsage().heapUsed;
    // Strings of their own of 1 MB each: ~40 KB once cut, 20 MB if the cut lines kept them alive.
    for (let i = 0; i < 3 * STDERR_TAIL_LINES; i++) {
      tail.push(Buffer.alloc(1_000_000, 97 + (i % 26)).toString('latin1'));
    }
    gc();
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(5_000_000);
    expect(tail.text()).toHaveLength(STDERR_TAIL_LINES * 2002 - 1);
  });
});

describe('exitOutcome', () => {
  it('completes with the last line parsed as JSON', () => {
    expect(exitOutcome(0, null, { text: '{"a":1}', cut: false }, '')).toEqual({
      type: 'complete',
      result: { a: 1 },
    });
  });

  it('refuses a result whose line was cut: it is longer than the protocol allows', () => {
    expect(exitOutcome(0, null, { text: '{"a":"xxxx…', cut: true }, '')).toEqual({
      type: 'fail',
      error: `the result (last stdout line) is not acceptable: it is longer than ${MAX_STDOUT_LINE_BYTES} bytes`,
      retryable: false,
      kind: 'error',
    });
  });

  it('completes with null when a cut last line does not begin like JSON', () => {
    expect(exitOutcome(0, null, { text: 'progress: xxxx…', cut: true }, '')).toEqual({
      type: 'complete',
      result: null,
    });
  });
});

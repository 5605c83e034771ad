import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { MAX_LOG_LINES, MAX_LOG_LINE_BYTES, MAX_MESSAGE_BYTES } from '@agentcom/shared';
import { LogBatcher, fitLine } from './log-batcher';
import { LogPace } from './log-pace';

/**
 * V8's garbage collector, for a test that measures what stays reachable: jest runs without
 * `--expose-gc`, and a context created after the flag is set gets `gc` all the same.
 */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** A line of `bytes` ASCII bytes that is a string of its own (flat, not a view of another). */
function distinctLine(bytes: number, seed: number): string {
  return Buffer.alloc(bytes, 97 + (seed % 26)).toString('latin1');
}

/** A send that records batches and completes only when the test lets it. */
class ControlledSend {
  readonly batches: string[][] = [];
  private releases: Array<() => void> = [];
  private waiters: Array<() => void> = [];

  readonly send = (lines: string[]): Promise<void> => {
    this.batches.push(lines);
    for (const waiter of this.waiters.splice(0)) waiter();
    return new Promise((resolve) => this.releases.push(resolve));
  };

  /** Resolves once `count` batches were sent. */
  async sent(count: number): Promise<void> {
    while (this.batches.length < count)
      await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  releaseAll(): void {
    for (const release of this.releases.splice(0)) release();
  }
}

const encoder = new TextEncoder();

describe('LogBatcher', () => {
  it('keeps the pace of its bytes: a batch that took more than the allowance delays the next one', async () => {
    jest.useFakeTimers();
    try {
      const sender = new ControlledSend();
      const batcher = new LogBatcher(sender.send, {
        flushMs: 10,
        pace: new LogPace({ bytesPerSecond: 100_000, burstBytes: 100_000 }),
      });
      // a full batch of ~200 KB as JSON: sent at once, the allowance (100 KB) is 100 KB short
      for (let i = 0; i < MAX_LOG_LINES; i++) batcher.push(distinctLine(1999, i));
      expect(sender.batches).toHaveLength(1);
      sender.releaseAll();
      await jest.advanceTimersByTimeAsync(0);
      for (let i = 0; i < MAX_LOG_LINES; i++) batcher.push(distinctLine(1999, i));
      await jest.advanceTimersByTimeAsync(900);
      expect(sender.batches).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(200);
      expect(sender.batches).toHaveLength(2);
      expect(sender.batches[1]).toHaveLength(MAX_LOG_LINES);
      sender.releaseAll();
      const closed = batcher.close(5000);
      await jest.advanceTimersByTimeAsync(5000);
      await closed;
    } finally {
      jest.useRealTimers();
    }
  });

  it('shares one pace between the batchers of a sidecar: a second task does not get a burst of its own', async () => {
    jest.useFakeTimers();
    try {
      const pace = new LogPace({ bytesPerSecond: 100_000, burstBytes: 100_000 });
      const first = new ControlledSend();
      const firstTask = new LogBatcher(first.send, { flushMs: 10, pace });
      for (let i = 0; i < MAX_LOG_LINES; i++) firstTask.push(distinctLine(1999, i));
      expect(first.batches).toHaveLength(1);
      first.releaseAll();
      await firstTask.close(1000);
      // the next task's full batch waits for what the first one took beyond the burst (~1 s)
      const second = new ControlledSend();
      const secondTask = new LogBatcher(second.send, { flushMs: 10, pace });
      for (let i = 0; i < MAX_LOG_LINES; i++) secondTask.push(distinctLine(1999, i));
      await jest.advanceTimersByTimeAsync(900);
      expect(second.batches).toHaveLength(0);
      await jest.advanceTimersByTimeAsync(200);
      expect(second.batches).toHaveLength(1);
      second.releaseAll();
      const closed = secondTask.close(5000);
      await jest.advanceTimersByTimeAsync(5000);
      await closed;
    } finally {
      jest.useRealTimers();
    }
  });

  it('ends within a second of its close whatever the pace: what the pace holds is dropped, and said', async () => {
    jest.useFakeTimers();
    try {
      const sender = new ControlledSend();
      const batcher = new LogBatcher(sender.send, {
        flushMs: 10,
        pace: new LogPace({ bytesPerSecond: 100_000, burstBytes: 50_000 }),
      });
      for (let i = 0; i < MAX_LOG_LINES; i++) batcher.push(distinctLine(1999, i));
      sender.releaseAll();
      await jest.advanceTimersByTimeAsync(0);
      // the first batch took 150 KB beyond the burst: the pace holds the next one 1.5 s;
      // 250 more lines (~500 KB) would take 6.5 s to go
      for (let i = 0; i < 250; i++) batcher.push(distinctLine(1999, i));
      let closed = false;
      const closing = batcher.close(10_000).then(() => (closed = true));
      await jest.advanceTimersByTimeAsync(0);
      expect(sender.batches).toHaveLength(2);
      expect(sender.batches[1]).toEqual(['[agentcom: 250 log lines dropped]']);
      sender.releaseAll();
      await jest.advanceTimersByTimeAsync(0);
      expect(closed).toBe(true);
      await closing;
    } finally {
      jest.useRealTimers();
    }
  });

  it('sends a full batch at once and the rest after the flush delay', async () => {
    const sender = new ControlledSend();
    const batcher = new LogBatcher(sender.send, { flushMs: 10 });
    for (let i = 0; i < MAX_LOG_LINES + 5; i++) batcher.push(`line ${i}`);
    expect(sender.batches).toHaveLength(1);
    expect(sender.batches[0]).toHaveLength(MAX_LOG_LINES);
    sender.releaseAll();
    await sender.sent(2);
    expect(sender.batches[1]).toEqual(['line 100', 'line 101', 'line 102', 'line 103', 'line 104']);
    sender.releaseAll();
    await batcher.close(1000);
  });

  it('keeps each batch within the frame limit as JSON, whatever its lines escape to', async () => {
    // terminal escapes or binary output: each control character is 6 bytes of JSON
    const line = '\u001b'.repeat(MAX_LOG_LINE_BYTES);
    const sender = new ControlledSend();
    const batcher = new LogBatcher(sender.send, { flushMs: 10 });
    for (let i = 0; i < MAX_LOG_LINES; i++) batcher.push(line);
    let sent = 0;
    for (let count = 1; sent < MAX_LOG_LINES; count++) {
      await sender.sent(count);
      const batch = sender.batches[count - 1]!;
      // the whole frame, envelope included, stays below the hub's limit
      const frame = JSON.stringify([
        'task:log',
        { taskId: 't', token: 'x'.repeat(60), lines: batch },
      ]);
      expect(Buffer.byteLength(frame)).toBeLessThan(MAX_MESSAGE_BYTES);
      sent += batch.length;
      sender.releaseAll();
    }
    await batcher.close(1000);
    expect(sender.batches.flat()).toHaveLength(MAX_LOG_LINES);
  });

  it('keeps one batch in flight and drops what overflows its buffer, saying how much', async () => {
    const sender = new ControlledSend();
    const batcher = new LogBatcher(sender.send, { flushMs: 10, maxBuffered: 150 });
    for (let i = 0; i < 400; i++) batcher.push(`line ${i}`);
    expect(sender.batches).toHaveLength(1);
    const closed = batcher.close(5000);
    sender.releaseAll();
    await sender.sent(2);
    sender.releaseAll();
    await sender.sent(3);
    sender.releaseAll();
    await closed;
    const [, second, third] = sender.batches;
    expect(second?.[0]).toBe('[agentcom: 150 log lines dropped]');
    expect(second).toHaveLength(MAX_LOG_LINES);
    expect(sender.batches.flat().filter((line) => line.startsWith('line '))).toHaveLength(250);
    expect(third?.at(-1)).toBe('line 249');
  });

  it('sends what is left on close, and gives up waiting after the timeout', async () => {
    const sender = new ControlledSend();
    const batcher = new LogBatcher(sender.send, { flushMs: 60_000 });
    batcher.push('last words');
    await batcher.close(50);
    expect(sender.batches).toEqual([['last words']]);
  });

  it('survives a send that fails', async () => {
    const batches: string[][] = [];
    const batcher = new LogBatcher(async (lines) => {
      batches.push(lines);
      throw new Error('not connected');
    });
    batcher.push('a');
    await batcher.close(1000);
    batcher.push('b');
    await batcher.close(1000);
    expect(batches).toEqual([['a'], ['b']]);
  });

  it('pauses for the flush delay after a batch that was not taken, however many lines wait', async () => {
    const flushMs = 100;
    const sends: Array<{ lines: string[]; at: number }> = [];
    let refusedAt = 0;
    let secondSent: () => void = () => undefined;
    const second = new Promise<void>((resolve) => (secondSent = resolve));
    const batcher = new LogBatcher(
      async (lines) => {
        sends.push({ lines, at: performance.now() });
        if (sends.length === 2) secondSent();
        if (sends.length > 1) return;
        await Promise.resolve();
        refusedAt = performance.now();
        throw new Error('the hub refused task:log: E_RATE_LIMITED');
      },
      { flushMs },
    );
    for (let i = 0; i < 3 * MAX_LOG_LINES; i++) batcher.push(`line ${i}`);
    await second;
    // 200 lines waited: without the pause the next batch left as soon as the first was refused.
    expect(sends[1]!.at - refusedAt).toBeGreaterThanOrEqual(flushMs - 1);
    expect(sends[1]!.lines[0]).toBe(`line ${MAX_LOG_LINES}`);
    await batcher.close(5000);
    expect(sends.flatMap(({ lines }) => lines)).toHaveLength(3 * MAX_LOG_LINES);
  });

  it('holds buffered long lines at their cut length, not at the length they were pushed with', async () => {
    const gc = collector();
    const sender = new ControlledSend();
    const batcher = new LogBatcher(sender.send, { flushMs: 10, maxBuffered: 1000 });
    batcher.push('first');
    await sender.sent(1);
    gc();
    const before = process.memoryUsage().heapUsed;
    // 300 lines of 1 MB wait behind the batch in flight: ~2.4 MB once cut, 300 MB if the cut
    // lines kept the pushed ones alive.
    for (let i = 0; i < 300; i++) batcher.push(distinctLine(1_000_000, i));
    gc();
    const retained = process.memoryUsage().heapUsed - before;
    expect(retained).toBeLessThan(30_000_000);
    const closed = batcher.close(5000);
    for (let sent = 2; sent <= 4; sent++) {
      sender.releaseAll();
      await sender.sent(sent);
    }
    sender.releaseAll();
    await closed;
    expect(sender.batches.flat()).toHaveLength(301);
  });
});

describe('fitLine', () => {
  it('keeps a line that fits', () => {
    expect(fitLine('short')).toBe('short');
  });

  it('cuts a long line to the byte limit without splitting a character', () => {
    const line = '€'.repeat(MAX_LOG_LINE_BYTES);
    const cut = fitLine(line);
    expect(encoder.encode(cut).length).toBeLessThanOrEqual(MAX_LOG_LINE_BYTES);
    expect(cut.endsWith('€…')).toBe(true);
  });

  it('keeps a line of exactly the byte limit whole, and cuts one byte more', () => {
    const line = 'x'.repeat(MAX_LOG_LINE_BYTES);
    expect(fitLine(line)).toBe(line);
    const cut = fitLine(`${line}€`);
    expect(cut).toBe(`${'x'.repeat(MAX_LOG_LINE_BYTES - 3)}…`);
    expect(encoder.encode(cut).length).toBe(MAX_LOG_LINE_BYTES);
  });
});

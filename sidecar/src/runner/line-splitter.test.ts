import { once } from 'node:events';
import { Readable } from 'node:stream';
import { LineSplitter, splitLines } from './line-splitter';

/** A splitter that records what it emits. */
function recording(maxBytes = 64): { splitter: LineSplitter; lines: string[]; cuts: boolean[] } {
  const lines: string[] = [];
  const cuts: boolean[] = [];
  const splitter = new LineSplitter(maxBytes, (line, cut) => {
    lines.push(line);
    cuts.push(cut);
  });
  return { splitter, lines, cuts };
}

describe('LineSplitter', () => {
  it('ends lines at \\n, \\r\\n and a lone \\r, as readline does, keeping empty lines', () => {
    const { splitter, lines } = recording();
    splitter.write('one\ntwo\r\nthree\rfour\n\nfive');
    expect(lines).toEqual(['one', 'two', 'three', 'four', '']);
    splitter.end();
    expect(lines).toEqual(['one', 'two', 'three', 'four', '', 'five']);
  });

  it('takes \\r and \\n in different chunks for one line end', () => {
    const { splitter, lines } = recording();
    splitter.write('one\r');
    splitter.write('\ntwo\r');
    splitter.write('three\n');
    splitter.end();
    expect(lines).toEqual(['one', 'two', 'three']);
  });

  it('emits nothing more at the end when the last line had its newline', () => {
    const { splitter, lines } = recording();
    splitter.write('one\n');
    splitter.end();
    expect(lines).toEqual(['one']);
  });

  it('decodes a character whose bytes arrive in different chunks', () => {
    const { splitter, lines } = recording();
    const bytes = Buffer.from('a€b😀c\n', 'utf8');
    for (let i = 0; i < bytes.length; i++) splitter.write(bytes.subarray(i, i + 1));
    expect(lines).toEqual(['a€b😀c']);
  });

  it('cuts a line longer than the cap to the cap, ending it with …, and says so', () => {
    const { splitter, lines, cuts } = recording(16);
    splitter.write(`${'x'.repeat(40)}\nshort\n`);
    expect(lines).toEqual([`${'x'.repeat(13)}…`, 'short']);
    expect(cuts).toEqual([true, false]);
    expect(Buffer.byteLength(lines[0] ?? '')).toBe(16);
  });

  it('keeps a line of exactly the cap whole', () => {
    const { splitter, lines, cuts } = recording(16);
    splitter.write(`${'x'.repeat(16)}\n`);
    expect(lines).toEqual(['x'.repeat(16)]);
    expect(cuts).toEqual([false]);
  });

  it('never cuts inside a character', () => {
    const { splitter, lines } = recording(10);
    // 7 bytes of room before the marker: two € (3 bytes each), not a third one's first byte.
    splitter.write('€€€€€\n');
    expect(lines).toEqual(['€€…']);
  });

  it('emits a last line without a newline at the end, cut if it is too long', () => {
    const { splitter, lines, cuts } = recording(16);
    splitter.write('y'.repeat(100));
    expect(lines).toEqual([]);
    splitter.end();
    expect(lines).toEqual([`${'y'.repeat(13)}…`]);
    expect(cuts).toEqual([true]);
  });

  it('holds at most the cap of a line of 50 MB without a newline, whatever it is fed', () => {
    const max = 8 * 1024;
    const { splitter, lines } = recording(max);
    const chunk = Buffer.alloc(64 * 1024, 'z');
    let held = 0;
    for (let fed = 0; fed < 50 * 1024 * 1024; fed += chunk.length) {
      splitter.write(chunk);
      held = Math.max(held, splitter.heldBytes);
    }
    expect(held).toBe(max);
    splitter.write('\nnext\n');
    expect(lines).toEqual([`${'z'.repeat(max - 3)}…`, 'next']);
    // The long line's buffer is released once it is out: an idle stream holds little.
    expect(splitter.heldBytes).toBeLessThanOrEqual(16 * 1024);
  });

  it('reads a stream to its end through splitLines', async () => {
    const lines: string[] = [];
    const stream = Readable.from([Buffer.from('one\ntw'), Buffer.from('o\nthree')]);
    splitLines(stream, 64, (line) => lines.push(line));
    await once(stream, 'end');
    expect(lines).toEqual(['one', 'two', 'three']);
  });
});

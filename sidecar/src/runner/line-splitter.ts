import type { Readable } from 'node:stream';

/** Marks a line that was cut, as `fitLine` of the log path does. */
const ELLIPSIS = Buffer.from('…', 'utf8');
const LF = 0x0a;
const CR = 0x0d;
/** The buffer a splitter keeps between lines; a larger one is released once its line is out. */
const KEPT_BUFFER_BYTES = 16 * 1024;

/**
 * Splits a byte stream into lines, holding at most `maxBytes` of a line: the rest of a longer
 * line is dropped as it arrives, and the line is emitted cut to `maxBytes` bytes of UTF-8 (never
 * inside a character) ending with `…`. A process that prints hundreds of megabytes without a
 * newline therefore costs `maxBytes`, where `readline` would hold all of it and, past V8's string
 * limit, throw from its data listener. Lines end as `readline` ends them (`\n`, `\r\n` or a lone
 * `\r`, even when `\r` and `\n` arrive in different chunks); a last line without a newline is
 * emitted at the end of the stream. Bytes are decoded a whole line at a time, so a character
 * split across chunks is decoded whole.
 */
export class LineSplitter {
  /** The current line so far: only its first `used` bytes are meaningful. */
  private line = Buffer.alloc(0);
  private used = 0;
  /** Whether bytes of the current line were dropped. */
  private cut = false;
  /** Whether the last byte seen ended a line with `\r`: a `\n` right after it ends nothing. */
  private afterCr = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: string, cut: boolean) => void,
  ) {
    if (maxBytes < ELLIPSIS.length) throw new RangeError(`maxBytes too small: ${maxBytes}`);
  }

  /** The bytes this splitter holds for the current line (never more than `maxBytes`). */
  get heldBytes(): number {
    return this.line.length;
  }

  write(chunk: Buffer | string): void {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    let start = 0;
    if (this.afterCr && bytes.length > 0) {
      this.afterCr = false;
      if (bytes[0] === LF) start = 1;
    }
    for (let i = start; i < bytes.length; i++) {
      const byte = bytes[i];
      if (byte !== LF && byte !== CR) continue;
      this.append(bytes, start, i);
      this.emit();
      if (byte === CR) {
        if (i + 1 === bytes.length) this.afterCr = true;
        else if (bytes[i + 1] === LF) i++;
      }
      start = i + 1;
    }
    this.append(bytes, start, bytes.length);
  }

  /** The end of the stream: a last line without a newline is emitted. */
  end(): void {
    if (this.used > 0 || this.cut) this.emit();
  }

  /** Copies what fits of `bytes[from, to)` (never a view: that would keep the chunk alive). */
  private append(bytes: Buffer, from: number, to: number): void {
    const room = this.maxBytes - this.used;
    const take = Math.min(to - from, room);
    if (take < to - from) this.cut = true;
    if (take <= 0) return;
    if (this.used + take > this.line.length) {
      const grown = Buffer.alloc(
        Math.min(this.maxBytes, Math.max(this.used + take, this.line.length * 2)),
      );
      this.line.copy(grown, 0, 0, this.used);
      this.line = grown;
    }
    bytes.copy(this.line, this.used, from, from + take);
    this.used += take;
  }

  private emit(): void {
    const cut = this.cut;
    let end = this.used;
    if (cut) {
      // Room for the marker, then back to the first byte of a character (not a continuation).
      end = Math.min(end, this.maxBytes - ELLIPSIS.length);
      while (end > 0 && end < this.used && (this.line[end]! & 0xc0) === 0x80) end--;
      ELLIPSIS.copy(this.line, end);
      end += ELLIPSIS.length;
    }
    const text = this.line.toString('utf8', 0, end);
    this.used = 0;
    this.cut = false;
    if (this.line.length > KEPT_BUFFER_BYTES) this.line = Buffer.alloc(0);
    this.onLine(text, cut);
  }
}

/** Feeds `stream` (Buffer chunks) to a {@link LineSplitter}; a last line is emitted at its end. */
export function splitLines(
  stream: Readable,
  maxBytes: number,
  onLine: (line: string, cut: boolean) => void,
): LineSplitter {
  const splitter = new LineSplitter(maxBytes, onLine);
  stream.on('data', (chunk: Buffer | string) => splitter.write(chunk));
  stream.once('end', () => splitter.end());
  return splitter;
}

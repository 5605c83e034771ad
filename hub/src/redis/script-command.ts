import { createHash } from 'node:crypto';
import { Command, type Redis } from 'ioredis';

/** An argument of a script call: numbers are sent as their decimal text. */
export type ScriptArg = string | number | Buffer;

/**
 * The RESP encoding of a command (an array of bulk strings): one string when every argument is a
 * string, else the string runs around the Buffers joined into one Buffer.
 *
 * ioredis encodes a command with a Buffer among its arguments (BullMQ's packed options are) piece
 * by piece, measuring and copying each argument into its own part, and copies the arguments with
 * `Array.prototype.flat` first: about 60 µs of CPU for the 90 or so arguments of a completion
 * (`completeAtOnce`), against about 11 µs here (issue 7, sixth pass).
 */
export function encodeCommand(name: string, args: readonly (string | Buffer)[]): string | Buffer {
  let text = `*${args.length + 1}\r\n$${Buffer.byteLength(name)}\r\n${name}\r\n`;
  let chunks: Buffer[] | undefined;
  for (const arg of args) {
    if (typeof arg === 'string') {
      text += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
    } else {
      text += `$${arg.length}\r\n`;
      (chunks ??= []).push(Buffer.from(text), arg);
      text = '\r\n';
    }
  }
  if (!chunks) return text;
  chunks.push(Buffer.from(text));
  return Buffer.concat(chunks);
}

/** An EVALSHA (or EVAL) that ioredis sends as {@link encodeCommand} encodes it. */
class ScriptCommand extends Command {
  constructor(name: 'evalsha' | 'eval', args: (string | Buffer)[]) {
    // no arguments for ioredis to copy and inspect: they are set, ready to encode, below;
    // replies as strings, as ioredis' own commands give them
    super(name, [], { replyEncoding: 'utf8' });
    this.args = args;
  }

  override toWritable(): string | Buffer {
    return encodeCommand(this.name, this.args as (string | Buffer)[]);
  }
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT');
}

/**
 * A Lua script run by its SHA1 (EVALSHA); when Redis does not know it (a restarted or new
 * Redis: `NOSCRIPT`), the call is sent again with the script's text (EVAL), which caches it.
 */
export class LuaScript {
  readonly sha: string;

  constructor(
    readonly name: string,
    readonly source: string,
  ) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  /** Runs the script with `keys` as KEYS and `args` as ARGV. */
  async run<R>(
    client: Redis,
    keys: readonly string[],
    args: readonly ScriptArg[] = [],
  ): Promise<R> {
    const params: (string | Buffer)[] = [this.sha, String(keys.length)];
    for (const key of keys) params.push(key);
    for (const arg of args) params.push(typeof arg === 'number' ? String(arg) : arg);
    try {
      return (await client.sendCommand(new ScriptCommand('evalsha', params))) as R;
    } catch (err) {
      if (!isNoScript(err)) throw err;
      params[0] = this.source;
      return (await client.sendCommand(new ScriptCommand('eval', params))) as R;
    }
  }
}

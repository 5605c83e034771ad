import { unpack } from 'msgpackr';

/**
 * The keys and ARGV of one of BullMQ's own scripts, ready to be passed on to an agentcom script
 * that runs it inside its own (`completeAtOnce`, `addThenClaim`). A msgpack-packed argument
 * (BullMQ packs options and argument lists) is sent as JSON, its position (1-based) in `packed`,
 * and packed again by the script (`cmsgpack.pack(cjson.decode(...))`, two C calls): one Buffer
 * among the arguments makes ioredis assemble the whole command as Buffers, which cost the hub
 * more than this.
 */
export interface BullScriptCall {
  keys: string[];
  args: Array<string | number>;
  packed: number[];
}

/** Splits BullMQ's argument list (keys first, `keyCount` of them) into a {@link BullScriptCall}. */
export function toBullScriptCall(
  all: ReadonlyArray<string | number | Buffer | undefined>,
  keyCount: number,
): BullScriptCall {
  const keys = all.slice(0, keyCount).map(String);
  const packed: number[] = [];
  const args = all
    .slice(keyCount)
    .filter((arg): arg is string | number | Buffer => arg !== undefined)
    .map((arg, i) => {
      if (!Buffer.isBuffer(arg)) return arg;
      packed.push(i + 1);
      // nil fields of a packed map are left out, which is the same to the script; nil items of
      // a packed list stay (JSON null, packed as nil again) so the positions hold
      return JSON.stringify(unpack(arg), (_, value: unknown) => value ?? undefined);
    });
  return { keys, args, packed };
}

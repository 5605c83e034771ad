import { z } from 'zod';
import { MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES } from '../protocol/version';

/** Most values {@link jsonDepth} walks before it gives up on a value. */
const MAX_JSON_VALUES = 1_000_000;

/** A JSON leaf: null, a string, a boolean or a finite number. */
function isJsonScalar(value: unknown): boolean {
  return (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

/**
 * Walks a value iteratively (no recursion, so hostile nesting cannot overflow the stack) and
 * returns its depth (a leaf alone is 1, `[1]` is 2), or `undefined` as soon as it exceeds
 * `maxDepth`, holds more than a million values, or holds a non-JSON value. Leaves are checked
 * where their container is read, and only containers are stacked (values and depths side by
 * side): a payload of half a million numbers cost a pair allocated for each, ten times the
 * `JSON.parse` that made it.
 */
export function jsonDepth(value: unknown, maxDepth: number): number | undefined {
  if (maxDepth < 1) return undefined;
  if (typeof value !== 'object' || value === null) return isJsonScalar(value) ? 1 : undefined;
  const containers: object[] = [value];
  const depths: number[] = [1];
  let deepest = 1;
  let visited = 1;
  while (containers.length > 0) {
    const item = containers.pop() as object;
    const depth = depths.pop() as number;
    let children: unknown[];
    if (Array.isArray(item)) {
      children = item;
    } else {
      const proto = Object.getPrototypeOf(item) as unknown;
      if (proto !== Object.prototype && proto !== null) return undefined;
      children = Object.values(item);
    }
    if (children.length === 0) continue;
    if (depth + 1 > deepest) {
      deepest = depth + 1;
      if (deepest > maxDepth) return undefined;
    }
    visited += children.length;
    if (visited > MAX_JSON_VALUES) return undefined;
    for (const child of children) {
      if (typeof child === 'object' && child !== null) {
        containers.push(child);
        depths.push(depth + 1);
      } else if (!isJsonScalar(child)) {
        return undefined;
      }
    }
  }
  return deepest;
}

/** Bytes of the UTF-8 JSON text of `value`. */
export function jsonBytes(value: unknown): number {
  const text = JSON.stringify(value) as string | undefined;
  return text === undefined ? 0 : utf8Length(text);
}

/** UTF-8 byte length of a string, without Node's Buffer (shared runs anywhere). */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * A JSON value (payload or result) bounded in depth and size. Checked without recursion first,
 * so a deeply nested hostile value is refused before anything else walks it.
 */
export const boundedJsonSchema = z.unknown().superRefine((value, ctx) => {
  if (value === undefined) {
    ctx.addIssue({ code: 'custom', message: 'a JSON value is required' });
    return;
  }
  const depth = jsonDepth(value, MAX_JSON_DEPTH);
  if (depth === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `must be plain JSON nested at most ${MAX_JSON_DEPTH} levels deep`,
    });
    return;
  }
  if (jsonBytes(value) > MAX_PAYLOAD_BYTES) {
    ctx.addIssue({ code: 'custom', message: `must be at most ${MAX_PAYLOAD_BYTES} bytes as JSON` });
  }
});

const labelsRecordSchema = z
  .record(z.string().min(1).max(64), z.string().max(256))
  .refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels');

/**
 * Labels, refusing one keyed `__proto__`. JSON.parse makes it an own key, but zod's records skip
 * it (a parsed object cannot hold it: it is the prototype's setter), so it vanished from what was
 * accepted without a word. Checked on the raw input, before the record; the JSON schema and the
 * types are the record's.
 */
export const labelsSchema = z.preprocess<
  unknown,
  typeof labelsRecordSchema,
  z.input<typeof labelsRecordSchema>
>((value, ctx) => {
  if (typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__')) {
    ctx.addIssue({ code: 'custom', message: 'the label key __proto__ is reserved' });
  }
  return value;
}, labelsRecordSchema);
export type Labels = z.infer<typeof labelsSchema>;

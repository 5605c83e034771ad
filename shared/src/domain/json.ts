import { z } from 'zod';
import { MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES } from '../protocol/version';

/**
 * Walks a value iteratively (no recursion, so hostile nesting cannot overflow the stack) and
 * returns its depth, or `undefined` as soon as it exceeds `maxDepth` or holds a non-JSON value.
 */
export function jsonDepth(value: unknown, maxDepth: number): number | undefined {
  const stack: Array<[unknown, number]> = [[value, 1]];
  let deepest = 0;
  let visited = 0;
  while (stack.length > 0) {
    const [item, depth] = stack.pop() as [unknown, number];
    if (++visited > 1_000_000) return undefined;
    if (depth > deepest) deepest = depth;
    if (deepest > maxDepth) return undefined;
    if (item === null || typeof item === 'string' || typeof item === 'boolean') continue;
    if (typeof item === 'number') {
      if (!Number.isFinite(item)) return undefined;
      continue;
    }
    if (Array.isArray(item)) {
      for (const child of item) stack.push([child, depth + 1]);
      continue;
    }
    if (typeof item === 'object') {
      const proto = Object.getPrototypeOf(item) as unknown;
      if (proto !== Object.prototype && proto !== null) return undefined;
      for (const child of Object.values(item as Record<string, unknown>)) {
        stack.push([child, depth + 1]);
      }
      continue;
    }
    return undefined;
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

export const labelsSchema = z
  .record(z.string().min(1).max(64), z.string().max(256))
  .refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels');
export type Labels = z.infer<typeof labelsSchema>;

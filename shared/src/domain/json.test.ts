import { MAX_JSON_DEPTH } from '../protocol/version';
import { boundedJsonSchema, jsonDepth } from './json';

/** `levels` arrays nested in each other, the innermost holding `leaf`. */
const nested = (levels: number, leaf: unknown = 0): unknown => {
  let value: unknown = leaf;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
};

describe('jsonDepth', () => {
  it('counts a leaf as 1 and each container around it as one more', () => {
    expect(jsonDepth(0, 10)).toBe(1);
    expect(jsonDepth('x', 10)).toBe(1);
    expect(jsonDepth(null, 10)).toBe(1);
    expect(jsonDepth([], 10)).toBe(1);
    expect(jsonDepth({}, 10)).toBe(1);
    expect(jsonDepth([1], 10)).toBe(2);
    expect(jsonDepth({ a: { b: [true, null] } }, 10)).toBe(4);
    expect(jsonDepth([[], [[]], 1], 10)).toBe(3);
    expect(jsonDepth(nested(9), 10)).toBe(10);
  });

  it('gives up past the depth asked for, at once for hostile nesting', () => {
    expect(jsonDepth(nested(10), 10)).toBeUndefined();
    expect(jsonDepth(nested(100_000), MAX_JSON_DEPTH)).toBeUndefined();
    expect(jsonDepth(1, 0)).toBeUndefined();
  });

  it('refuses what JSON cannot hold', () => {
    for (const bad of [
      undefined,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      () => 0,
      Symbol('s'),
      10n,
      [1, undefined],
      { a: new Date() },
      [new Map()],
      Object.assign(Object.create({ inherited: 1 }) as object, { a: 1 }),
    ]) {
      expect(jsonDepth(bad, 10)).toBeUndefined();
    }
    // an object without a prototype is plain JSON
    expect(jsonDepth(Object.assign(Object.create(null) as object, { a: [1] }), 10)).toBe(3);
  });

  it('gives up past a million values', () => {
    expect(jsonDepth(new Array(999_999).fill(0), 10)).toBe(2);
    expect(jsonDepth(new Array(1_000_000).fill(0), 10)).toBeUndefined();
  });

  it('is what the bounded JSON schema checks', () => {
    expect(boundedJsonSchema.safeParse(nested(MAX_JSON_DEPTH - 1)).success).toBe(true);
    expect(boundedJsonSchema.safeParse(nested(MAX_JSON_DEPTH)).success).toBe(false);
    expect(boundedJsonSchema.safeParse(undefined).success).toBe(false);
  });
});

import { z } from 'zod';

/** The range a query integer must be in; without `max`, up to `Number.MAX_SAFE_INTEGER`. */
export interface QueryIntegerBounds {
  min: number;
  max?: number;
}

/**
 * A whole number from a query string parameter, strictly: plain decimal digits (leading zeros
 * allowed), a leading `-` only when `min` is negative, within `[min, max]`. `z.coerce.number()`
 * reads through `Number()`, so `0x10` was 16, `1e3` 1000, ` 5` 5 and an empty value 0. Anything
 * else (hex, an exponent, a sign, a space, a fraction, an empty or repeated parameter) is refused
 * with the parameter's path. Chain `.default(n)` or `.optional()` for an absent parameter. In
 * JSON Schema (`io: 'input'`) it is an integer with its bounds, as OpenAPI describes a query one.
 */
export function queryInteger({ min, max = Number.MAX_SAFE_INTEGER }: QueryIntegerBounds) {
  const digits = min < 0 ? /^-?[0-9]+$/ : /^[0-9]+$/;
  const written =
    min < 0
      ? 'must be a whole number in decimal digits, with a leading - when negative'
      : 'must be a whole number in decimal digits';
  return z.preprocess((value, ctx) => {
    if (typeof value !== 'string' || !digits.test(value)) {
      ctx.addIssue({ code: 'custom', message: written, input: value });
      return z.NEVER;
    }
    const number = Number(value);
    // past 2^53 a number no longer names one integer (and 400 digits make Infinity)
    if (!Number.isSafeInteger(number)) {
      ctx.addIssue({ code: 'custom', message: `must be ${min} to ${max}`, input: value });
      return z.NEVER;
    }
    return number;
  }, z.number().int().min(min).max(max));
}

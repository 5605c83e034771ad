import { z } from 'zod';
import { queryInteger } from './query-integer';

describe('queryInteger', () => {
  const parse = (schema: z.ZodType, value: unknown) => {
    const parsed = z.object({ n: schema }).safeParse({ n: value });
    return parsed.success ? parsed.data.n : parsed.error.issues.map((issue) => issue.path[0]);
  };

  it('reads plain decimal digits in range as the number they write', () => {
    const schema = queryInteger({ min: 0, max: 1000 });
    for (const [text, value] of [
      ['0', 0],
      ['16', 16],
      ['007', 7],
      ['1000', 1000],
    ] as const) {
      expect(parse(schema, text)).toBe(value);
    }
  });

  it('refuses what Number() would read (hex, exponent, sign, space, fraction, empty), naming the parameter', () => {
    const schema = queryInteger({ min: 0, max: 1000 });
    for (const text of [
      '0x10',
      '0o7',
      '0b1',
      '1e1',
      '+1',
      '-0',
      ' 1',
      '1 ',
      '1.0',
      '1.5',
      '',
      'Infinity',
      '١',
    ]) {
      expect({ text, parsed: parse(schema, text) }).toEqual({ text, parsed: ['n'] });
    }
  });

  it('refuses numbers out of range, huge ones included, and anything but one string', () => {
    const schema = queryInteger({ min: 1, max: 500 });
    for (const value of [
      '0',
      '501',
      '9'.repeat(400),
      '9007199254740993',
      ['1', '2'],
      5,
      undefined,
    ]) {
      expect({ value, parsed: parse(schema, value) }).toEqual({ value, parsed: ['n'] });
    }
    expect(parse(queryInteger({ min: 0 }), '9007199254740991')).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('takes a leading minus only when the range goes below zero', () => {
    expect(parse(queryInteger({ min: -10, max: 10 }), '-10')).toBe(-10);
    expect(parse(queryInteger({ min: -10, max: 10 }), '-11')).toEqual(['n']);
    expect(parse(queryInteger({ min: -10, max: 10 }), '+1')).toEqual(['n']);
    expect(parse(queryInteger({ min: 0, max: 10 }), '-1')).toEqual(['n']);
  });

  it('gives way to a default or an absent value when chained', () => {
    expect(parse(queryInteger({ min: 1, max: 9 }).default(5), undefined)).toBe(5);
    expect(parse(queryInteger({ min: 1, max: 9 }).optional(), undefined)).toBeUndefined();
  });

  it('is an integer with its bounds in JSON Schema, as OpenAPI describes a query parameter', () => {
    expect(z.toJSONSchema(queryInteger({ min: 1, max: 500 }), { io: 'input' })).toMatchObject({
      type: 'integer',
      minimum: 1,
      maximum: 500,
    });
  });
});

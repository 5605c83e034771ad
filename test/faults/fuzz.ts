/**
 * Seeded generators of hostile input for the hostile-input fault scenario. Everything random
 * comes from one {@link Rng} (mulberry32), so a seed replays the exact same barrage:
 * `FUZZ_SEED=<n> npx jest test/faults/hostile`.
 */

/**
 * `Math`'s functions, looked up once: under Jest a module runs in a `vm` context, where each
 * lookup of a global such as `Math` goes through the context's interceptor (about 0.2 µs): in
 * {@link Rng}'s per-character loop that made generating the barrage 50 times slower.
 */
const { floor, imul } = Math;

/** A small, fast, seedable PRNG (mulberry32). Deterministic for a given 32-bit seed. */
export class Rng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + floor(this.next() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[floor(this.next() * items.length)] as T;
  }

  /** A string of `length` characters drawn from `alphabet`. */
  string(length: number, alphabet = ID_ALPHABET): string {
    let out = '';
    for (let i = 0; i < length; i++) out += alphabet[floor(this.next() * alphabet.length)];
    return out;
  }
}

/** The seed of this run: `FUZZ_SEED` (decimal or 0x hex) or a fixed default, so runs repeat. */
export function fuzzSeed(): number {
  const raw = process.env.FUZZ_SEED;
  if (raw === undefined || raw === '') return 0x5eed_a9c0;
  const seed = Number(raw);
  if (!Number.isInteger(seed)) throw new Error(`FUZZ_SEED must be an integer, got ${raw}`);
  return seed >>> 0;
}

export const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-';

/** Keys that attack prototypes when a parser or a merge is careless. */
export const PROTO_KEYS = ['__proto__', 'constructor', 'prototype'] as const;

/** Lengths just under, at and over the string limits of the shared schemas. */
export const BOUNDARY_LENGTHS = [
  0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 8191, 8192, 8193,
  65_535, 65_536, 65_537,
] as const;

/** Numbers at and around the numeric limits of the shared schemas, plus the awkward ones. */
export const BOUNDARY_NUMBERS = [
  -1,
  -0.5,
  0,
  0.5,
  1,
  99,
  99.999,
  100,
  100.0001,
  101,
  500,
  501,
  1000,
  1001,
  2_097_151,
  2_097_152,
  2_097_153,
  86_400_000,
  86_400_001,
  604_800_000,
  604_800_001,
  31_536_000_000,
  31_536_000_001,
  2 ** 31,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 2,
  1e21,
  1e308,
  -1e308,
  Number.MIN_VALUE,
  Number.EPSILON,
] as const;

/** Strings that break naive code: key separators, hash tags, traversal, markup, control bytes. */
export const NASTY_STRINGS = [
  '',
  ' ',
  '\t\n',
  '\u0000',
  'a\u0000b',
  '\u0007\u001b[31m',
  '\r\nFLUSHALL\r\n',
  '*',
  '?',
  '{agentcom}',
  'a:b',
  'agent:x',
  '../../etc/passwd',
  '..\\..\\windows',
  '%00',
  '%s%n%x',
  '${jndi:ldap://127.0.0.1/x}',
  '<script>alert(1)</script>',
  "'; DROP TABLE tasks; --",
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'null',
  'undefined',
  'NaN',
  'true',
  '0',
  '-1',
  '1e309',
  '\u202e\u0645\u0631\u062d\u0628\u0627',
  '\u200b\u200d\ufeff',
  '\ud83d\ude00\ud83e\udd16',
  '\ud800',
  '\udfff',
  'a\ud800b',
  '\uffff\ufffe',
  '\u2028\u2029',
  '.hidden',
  '-leading-dash',
  'trailing ',
  'x'.repeat(129),
  'wait',
  'meta',
  'events',
] as const;

/** Suffixes BullMQ uses for its own keys under `<prefix>:<queue>:`: valid-looking task ids that are not tasks. */
export const BULLMQ_KEY_NAMES = [
  'meta',
  'events',
  'id',
  'wait',
  'paused',
  'active',
  'completed',
  'failed',
  'delayed',
  'prioritized',
  'marker',
  'stalled',
  'stalled-check',
  'limiter',
  'pc',
  'repeat',
  'metrics',
  'waiting-children',
] as const;

/** A JSON-like value that is not a plain JSON object (wrong type for an object payload). */
export function nonObject(rng: Rng): unknown {
  return rng.pick<() => unknown>([
    () => null,
    () => rng.pick([true, false]),
    () => rng.pick(BOUNDARY_NUMBERS),
    () => rng.pick(NASTY_STRINGS),
    () => [],
    () => [hostileValue(rng, 2)],
    () => nestedArrays(rng.int(2, 300)),
  ])();
}

/** Arrays nested `depth` levels deep: `[[[...]]]`. */
export function nestedArrays(depth: number): unknown {
  let value: unknown = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

/** Objects nested `depth` levels deep: `{"a":{"a":...}}`. */
export function nestedObjects(depth: number): unknown {
  let value: unknown = {};
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

/** The same nesting as raw JSON text, without building it in memory (10,000 levels and more). */
export function nestedArraysText(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}

export function nestedObjectsText(depth: number): string {
  return '{"a":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1);
}

/** A string with a length taken from the boundaries (or, rarely, a long one). */
export function boundaryString(rng: Rng, allowHuge = false): string {
  const length =
    allowHuge && rng.chance(0.02)
      ? rng.pick([256 * 1024, 1024 * 1024, 1024 * 1024 + 1])
      : rng.pick(BOUNDARY_LENGTHS);
  return rng.string(length, rng.chance(0.8) ? ID_ALPHABET : 'é€😀\u0000:{} ');
}

/** Any hostile JSON-ish value, nested at most `depth` levels. */
export function hostileValue(rng: Rng, depth: number): unknown {
  const choices: Array<() => unknown> = [
    () => null,
    () => rng.pick([true, false]),
    () => rng.pick(BOUNDARY_NUMBERS),
    () => rng.pick(NASTY_STRINGS),
    () => boundaryString(rng),
    () => [],
    () => ({}),
    () => nestedArrays(rng.int(60, 200)),
    () => nestedObjects(rng.int(60, 120)),
    () => protoObject(rng),
  ];
  if (depth > 0) {
    choices.push(
      () => Array.from({ length: rng.int(1, 4) }, () => hostileValue(rng, depth - 1)),
      () =>
        Object.fromEntries(
          Array.from({ length: rng.int(1, 4) }, () => [
            rng.pick([...NASTY_STRINGS, 'taskId', 'token', 'x']),
            hostileValue(rng, depth - 1),
          ]),
        ),
    );
  }
  return rng.pick(choices)();
}

/**
 * An object whose own keys include `__proto__` / `constructor` / `prototype`, built through
 * `JSON.parse` (as a parser on the receiving side would build it), not through assignment.
 */
export function protoObject(rng: Rng, base: Record<string, unknown> = {}): Record<string, unknown> {
  const key = rng.pick(PROTO_KEYS);
  const inner = rng.pick<unknown>([
    { polluted: 'yes' },
    { prototype: { polluted: 'yes' } },
    'x',
    1,
    null,
    [],
  ]);
  const rest = JSON.stringify(base).slice(1); // `}` or `"a":1}`
  const text = `{${JSON.stringify(key)}:${JSON.stringify(inner)}${rest === '}' ? '}' : `,${rest}`}`;
  return JSON.parse(text) as Record<string, unknown>;
}

/**
 * A mutation of a valid object: one to three changes among wrong types, missing fields, extra
 * fields, prototype keys, boundary values and replacing the whole thing. The caller checks the
 * result against the real schema and tries again when a mutation happened to stay valid.
 */
export function mutate(
  rng: Rng,
  valid: Record<string, unknown>,
  boundaries: ReadonlyArray<(rng: Rng) => [string, unknown]>,
): { value: unknown; how: string } {
  const roll = rng.next();
  if (roll < 0.06) return { value: nonObject(rng), how: 'not-object' };
  const value: Record<string, unknown> = { ...valid };
  const hows: string[] = [];
  const changes = rng.int(1, 3);
  let result: Record<string, unknown> = value;
  for (let i = 0; i < changes; i++) {
    const keys = Object.keys(result);
    const kind = rng.pick([
      'wrong-type',
      'wrong-type',
      'missing',
      'extra',
      'proto',
      'boundary',
      'boundary',
    ] as const);
    if (kind === 'wrong-type' && keys.length > 0) {
      result[rng.pick(keys)] = hostileValue(rng, 2);
    } else if (kind === 'missing' && keys.length > 0) {
      delete result[rng.pick(keys)];
    } else if (kind === 'extra') {
      result[rng.pick(['extra', 'agentId', 'hubId', 'state', 'x'.repeat(rng.int(1, 300))])] =
        hostileValue(rng, 1);
    } else if (kind === 'proto') {
      result = protoObject(rng, result);
    } else if (boundaries.length > 0) {
      const [key, boundary] = rng.pick(boundaries)(rng);
      result[key] = boundary;
    } else {
      result[`extra${i}`] = 1;
    }
    hows.push(kind);
  }
  return { value: result, how: hows.join('+') };
}

/** JSON round trip: what a JSON transport delivers of `value` (undefined dropped, NaN → null). */
export function overTheWire(value: unknown): unknown {
  const text = JSON.stringify(value);
  return text === undefined ? undefined : (JSON.parse(text) as unknown);
}

/** Runs `worker` over `items` with at most `concurrency` in flight. */
export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  worker: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      await worker(items[index] as T, index);
    }
  });
  await Promise.all(lanes);
}

/**
 * Groups failures by a short signature so a broken behaviour shows once with its count and a
 * few examples, instead of thousands of lines.
 */
export class FailureLog {
  private readonly groups = new Map<string, { count: number; examples: string[] }>();
  total = 0;

  /** `parent`, when given, records every failure added here too (a run-wide log of phases). */
  constructor(private readonly parent?: FailureLog) {}

  add(signature: string, example: string): void {
    this.parent?.add(signature, example);
    this.total++;
    const group = this.groups.get(signature) ?? { count: 0, examples: [] };
    group.count++;
    if (group.examples.length < 3) group.examples.push(example.slice(0, 400));
    this.groups.set(signature, group);
  }

  summary(): Record<string, { count: number; examples: string[] }> {
    return Object.fromEntries([...this.groups.entries()].sort(([a], [b]) => a.localeCompare(b)));
  }
}

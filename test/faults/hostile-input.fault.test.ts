import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import {
  AGENT_NAMESPACE,
  CLIENT_EVENTS,
  CLIENT_EVENT_SCHEMAS,
  ERROR_CODES,
  MAX_CURSOR_LENGTH,
  MAX_MESSAGE_BYTES,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  agentIdSchema,
  cancelTaskBodySchema,
  createAgentBodySchema,
  createTaskBodySchema,
  handshakeAuthSchema,
  isErrorCode,
  listTasksQuerySchema,
  taskIdSchema,
  taskLogsQuerySchema,
  type ClientEventName,
  type ErrorCode,
  type TaskView,
} from '@agentcom/shared';
import { Redis } from 'ioredis';
import { io, type ManagerOptions, type SocketOptions } from 'socket.io-client';
import type { ZodType } from 'zod';
import { decodeCursor } from '../../hub/src/tasks/task-listing';
import { TEST_ADMIN_KEY, api, eventually } from '../helpers/hub';
import { mintToken, startHubProcess, type HubProcess } from '../helpers/processes';
import { heapUsedAfterGcMb, inspectorUrl } from '../helpers/inspector';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { recordReliability } from '../helpers/reliability';
import { TestAgent, withTimeout } from '../helpers/test-agent';
import { FULL, size } from './fault-cluster';
import {
  BOUNDARY_NUMBERS,
  BULLMQ_KEY_NAMES,
  FailureLog,
  ID_ALPHABET,
  NASTY_STRINGS,
  PROTO_KEYS,
  Rng,
  fuzzSeed,
  hostileValue,
  mutate,
  nestedArrays,
  nestedArraysText,
  nestedObjects,
  nestedObjectsText,
  overTheWire,
  runPool,
} from './fuzz';
import { RawSocketIo, type RawConnectResult } from './raw-socket';
import { diffSnapshots, snapshotRedis, type KeyState } from './redis-snapshot';

/**
 * Scenario 7, hostile input: a seeded barrage of malformed payloads at every socket event, the
 * handshake and every HTTP route of one hub replica (a child process), then: the replica still
 * serves, its memory is back near its baseline, and Redis holds exactly what it held before.
 */

const SCALE = size(1, 5);
/** Per phase; FULL=1 sends five times as much. */
const PHASE_TIMEOUT_MS = size(300_000, 1_500_000);
const SEED = fuzzSeed();
const MiB = 1024 * 1024;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Refused handshakes are counted per address (AUTH_FAIL_LIMIT): the barrage comes from its own loopback address. */
const HANDSHAKE_ADDRESS = '127.0.0.3';
const JUNK_ADDRESS = '127.0.0.4';
/**
 * What the barrage may leave behind: V8 heap in use after full collections (a leak of what the
 * inputs carried would show here), and RSS after the settle wait, a bound on native memory only:
 * RSS also counts what V8 and malloc have not given back yet, which varied from 15 to 70 MB above
 * the baseline in CI runs of the same code (it was the bound here, at 50 MB, and flaked).
 */
const HEAP_BOUND_MB = 15;
const RSS_BOUND_MB = 150;
/** "Back at baseline": the settle wait ends early once RSS is within this of the baseline. */
const RSS_SETTLED_MB = 10;
/**
 * The longest settle wait. RSS never came within RSS_SETTLED_MB of the baseline in 90 s (it was the
 * wait before the heap became the leak check), so a longer wait only buys a tighter RSS reading.
 */
const RSS_SETTLE_MAX_MS = 30_000;
/**
 * The settle wait also ends once RSS has stopped falling: no sample RSS_FALL_MB below the last low
 * for RSS_PLATEAU_MS. After the full collections RSS mostly stays where they left it (within
 * 3.5 MB for the whole 30 s in local runs that used the wait up); the window outlasts the 8 s
 * V8's memory reducer waits before its memory-reducing collections, and RSS still falling keeps
 * the wait going (up to RSS_SETTLE_MAX_MS). An earlier reading is, if anything, higher: the
 * bound is no looser.
 */
const RSS_PLATEAU_MS = 10_000;
const RSS_FALL_MB = 1;
/** Socket.IO's own reserved names: its parser refuses them (and closes the connection). */
const RESERVED_EVENTS = [
  'connect',
  'connect_error',
  'disconnect',
  'disconnecting',
  'newListener',
  'removeListener',
];

const FUZZ_AGENT = { id: 'fuzz-f', queues: ['fz'] };
const RAW_AGENT = { id: 'fuzz-raw', queues: ['fz-raw'] };
const LIMITED_AGENT = { id: 'fuzz-q', allowed: ['only-q'] };
const CLOSING_AGENT = { id: 'fuzz-o', queues: ['fz-o'] };
/** The queue malformed task bodies name: nobody serves it, so a body wrongly accepted stays visible in Redis. */
const SINK_QUEUE = 'fuzz-sink';

interface Identity {
  token: string;
  allowed?: string[];
}

/** What every phase shares. */
interface Ctx {
  redis: RedisProcess;
  redisClient: Redis;
  prefix: string;
  hub: HubProcess;
  hubOutput: () => string;
  identities: Map<string, Identity>;
  fuzz: TestAgent;
  fuzzDisconnects: string[];
  raw: RawSocketIo;
  completedTaskId: string;
  rssBeforeMb: number;
  /** V8 heap in use after full collections, before the barrage. */
  heapBeforeMb: number;
  snapshotBefore: Map<string, KeyState>;
  healthMaxMs: number;
}

let ctx: Ctx | undefined;
const counts: Record<string, number> = {};
const count = (category: string, n = 1): void => {
  counts[category] = (counts[category] ?? 0) + n;
};
const measured: Record<string, string> = {};
const wrongAnswers = new FailureLog();
/** Longest /healthz answer per phase (ms): how long the replica keeps a probe waiting under the barrage. */
const stalls: Record<string, number> = {};

const need = (): Ctx => {
  if (!ctx) throw new Error('setup failed: see beforeAll');
  return ctx;
};

// ---------------------------------------------------------------- helpers: process and Redis

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no VmRSS for pid ${pid}`);
  return kb / 1024;
}

/** RSS once it stopped moving: 4 samples 500 ms apart within 2 MB of each other (at most 20 s). */
async function settledRssMb(pid: number): Promise<number> {
  const samples: number[] = [];
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    samples.push(rssMb(pid));
    const last = samples.slice(-4);
    if (last.length === 4 && Math.max(...last) - Math.min(...last) < 2) break;
    await new Promise((resolve) => setTimeout(resolve, 500)); // sampling the settle period
  }
  return samples[samples.length - 1] ?? NaN;
}

/**
 * Waits (at most RSS_SETTLE_MAX_MS, sampling every second) until RSS is at most `targetMb`, or has
 * stopped falling (RSS_PLATEAU_MS): V8 gives memory back to the OS only once the process is idle
 * for a while (its memory reducer), so RSS right after a burst says little. Returns the last
 * sample and how long it took.
 */
async function rssBackNear(
  pid: number,
  targetMb: number,
): Promise<{ rssMb: number; waitedMs: number }> {
  const started = Date.now();
  let current = rssMb(pid);
  let low = current;
  let fellAt = started;
  while (
    current > targetMb &&
    Date.now() - started < RSS_SETTLE_MAX_MS &&
    Date.now() - fellAt < RSS_PLATEAU_MS
  ) {
    await new Promise((resolve) => setTimeout(resolve, 1000)); // sampling the settle period
    current = rssMb(pid);
    if (current <= low - RSS_FALL_MB) {
      low = current;
      fellAt = Date.now();
    }
  }
  return { rssMb: current, waitedMs: Date.now() - started };
}

/**
 * Keys left out of the before/after comparison, each for a reason that has nothing to do with
 * the barrage:
 * - `{<p>}:bull:<queue>:stalled-check`: BullMQ's stalled checker writes the time of its last check
 *   there every STALLED_INTERVAL_MS (a timestamp with a TTL), whatever the input.
 * - `{<p>}:auth-fail:<address>`: the handshake limiter counts refused handshakes per address by
 *   design (TTL 60 s); the handshake phase asserts its value equals the refusals it caused.
 * And compared by members only: `{<p>}:replicas`, whose score is each replica's liveness time.
 */
const EXCLUSIONS = [
  '{<p>}:bull:<queue>:stalled-check: BullMQ stalled checker timestamp, rewritten every check',
  '{<p>}:auth-fail:<address>: handshake-limiter counter, checked separately against the refusals sent',
  '{<p>}:replicas: members compared, scores (liveness times) ignored',
];

function snapshot(c: { redisClient: Redis; prefix: string }): Promise<Map<string, KeyState>> {
  return snapshotRedis(c.redisClient, {
    exclude: (key) => key.endsWith(':stalled-check') || key.startsWith(`{${c.prefix}}:auth-fail:`),
    membersOnly: (key) => key === `{${c.prefix}}:replicas`,
  });
}

/** Takes snapshots 300 ms apart until two agree (bounded): the baseline must not be moving. */
async function stableSnapshot(c: {
  redisClient: Redis;
  prefix: string;
}): Promise<Map<string, KeyState>> {
  let previous = await snapshot(c);
  let changes: string[] = [];
  for (let i = 0; i < 30; i++) {
    await new Promise((resolve) => setTimeout(resolve, 300)); // spacing two reads of an idle Redis
    const next = await snapshot(c);
    changes = diffSnapshots(previous, next);
    if (changes.length === 0) return next;
    previous = next;
  }
  throw new Error(`Redis never settled while idle: ${changes.join('; ')}`);
}

// ---------------------------------------------------------------- helpers: socket payloads

type LooseSocket = {
  timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<unknown> };
  emit(event: string, ...args: unknown[]): unknown;
};

const loose = (agent: TestAgent): LooseSocket => agent.socket as unknown as LooseSocket;

function ackCode(ack: unknown): string {
  if (typeof ack !== 'object' || ack === null) return `non-object ack ${String(ack)}`;
  const { ok, code } = ack as { ok?: unknown; code?: unknown };
  if (ok !== false) return `ok:${String(ok)}`;
  return typeof code === 'string' ? code : 'no code';
}

function bytesOf(value: unknown): number {
  if (Buffer.isBuffer(value)) return value.length;
  const text = JSON.stringify(value, (_key, v: unknown) =>
    Buffer.isBuffer(v) ? `b${v.length}` : v,
  ) as string | undefined;
  return text === undefined ? 0 : Buffer.byteLength(text);
}

const id = (rng: Rng): string => `t${rng.string(rng.int(1, 30))}`;
const token = (rng: Rng): string => rng.string(rng.int(1, 60));

/** A valid payload of each client event (what the mutations start from). */
const VALID_PAYLOAD: Record<ClientEventName, (rng: Rng) => Record<string, unknown>> = {
  'task:accept': (rng) => ({ taskId: id(rng), token: token(rng) }),
  'task:progress': (rng) => ({
    taskId: id(rng),
    token: token(rng),
    progress: rng.int(0, 100),
    ...(rng.chance(0.5) ? { message: 'working' } : {}),
  }),
  'task:log': (rng) => ({ taskId: id(rng), token: token(rng), lines: ['one', 'two'] }),
  'task:complete': (rng) => ({ taskId: id(rng), token: token(rng), result: { n: rng.int(0, 9) } }),
  'task:fail': (rng) => ({
    taskId: id(rng),
    token: token(rng),
    error: 'boom',
    retryable: rng.chance(0.5),
    ...(rng.chance(0.3) ? { kind: rng.pick(['error', 'timeout', 'cancelled']) } : {}),
    ...(rng.chance(0.2) ? { rateLimitedUntil: Date.now() + 60_000 } : {}),
  }),
  'agent:heartbeat': (rng) => (rng.chance(0.5) ? {} : { taskId: id(rng), token: token(rng) }),
  'agent:drain': () => ({}),
  'agent:resume': () => ({}),
};

type Boundary = (rng: Rng) => [string, unknown];
const REF_BOUNDARIES: Boundary[] = [
  () => ['taskId', 'x'.repeat(129)],
  () => ['taskId', ''],
  (rng) => ['taskId', rng.pick(['a:b', '{x}', '.x', '-x', 'a b', 'é', 'a/b', '\u0000'])],
  () => ['token', 't'.repeat(129)],
  () => ['token', ''],
  (rng) => ['taskId', rng.pick(BOUNDARY_NUMBERS)],
];
const EVENT_BOUNDARIES: Record<ClientEventName, Boundary[]> = {
  'task:accept': REF_BOUNDARIES,
  'task:progress': [
    ...REF_BOUNDARIES,
    (rng) => ['progress', rng.pick([-1, -0.0001, 100.0001, 101, 1e308, '50', null, true])],
    () => ['message', 'm'.repeat(1025)],
    () => ['message', 'm'.repeat(1024)],
  ],
  'task:log': [
    ...REF_BOUNDARIES,
    () => ['lines', []],
    () => ['lines', Array.from({ length: 101 }, () => 'x')],
    () => ['lines', ['x'.repeat(8193)]],
    () => ['lines', Array.from({ length: 100 }, () => 'x'.repeat(8192))],
    (rng) => ['lines', [rng.pick(BOUNDARY_NUMBERS)]],
    () => ['lines', 'not an array'],
  ],
  'task:complete': [
    ...REF_BOUNDARIES,
    (rng) => ['result', nestedArrays(rng.int(65, 300))],
    (rng) => ['result', nestedObjects(rng.int(65, 200))],
    () => ['result', 'x'.repeat(MAX_PAYLOAD_BYTES)],
    () => ['result', { big: 'x'.repeat(MAX_PAYLOAD_BYTES - 100), more: 'y'.repeat(200) }],
  ],
  'task:fail': [
    ...REF_BOUNDARIES,
    () => ['error', ''],
    () => ['error', 'e'.repeat(64 * 1024 + 1)],
    () => ['error', 'e'.repeat(64 * 1024)],
    (rng) => ['retryable', rng.pick(['true', 1, null, 0])],
    (rng) => ['kind', rng.pick(['panic', '', 'ERROR', 1])],
    (rng) => ['rateLimitedUntil', rng.pick([0, -1, 1.5, 'soon', 1e308])],
  ],
  'agent:heartbeat': [...REF_BOUNDARIES, () => ['state', 'idle']],
  'agent:drain': [() => ['force', true], () => ['agentId', 'someone-else']],
  'agent:resume': [() => ['force', true], () => ['agentId', 'someone-else']],
};

/**
 * A payload of `event` its schema refuses (checked against the real schema, as it arrives). Never
 * a binary one: that closes the connection (see the connection-closing inputs).
 */
function malformedPayload(rng: Rng, event: ClientEventName): { payload: unknown; how: string } {
  const schema = CLIENT_EVENT_SCHEMAS[event] as ZodType;
  for (let attempt = 0; attempt < 20; attempt++) {
    const candidate = mutate(rng, VALID_PAYLOAD[event](rng), EVENT_BOUNDARIES[event]);
    if (bytesOf(candidate.value) > MAX_MESSAGE_BYTES - 64 * 1024) continue;
    const arriving = overTheWire(candidate.value);
    if (!schema.safeParse(arriving).success)
      return { payload: candidate.value, how: candidate.how };
  }
  return { payload: { ...VALID_PAYLOAD[event](rng), unexpected: true }, how: 'extra' };
}

function randomBytesFrom(rng: Rng, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = rng.int(0, 255);
  return bytes;
}

const UNKNOWN_EVENT_NAMES = [
  'task:cancel',
  'task:assign',
  'task:create',
  'task:retry',
  'hub:error',
  'hub:draining',
  'agent:register',
  'agent:revoke',
  'error',
  'TASK:ACCEPT',
  'task:accept ',
  ' task:accept',
  'task:accept\u0000',
  'task:accepT',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  '',
  'snapshot:get',
];

function unknownEventName(rng: Rng): string {
  const roll = rng.next();
  if (roll < 0.6) return rng.pick(UNKNOWN_EVENT_NAMES);
  if (roll < 0.8) return rng.pick(NASTY_STRINGS);
  if (roll < 0.95) return rng.string(rng.int(1, 200), `${ID_ALPHABET}:é😀 `);
  return 'e'.repeat(rng.int(1000, 64 * 1024));
}

// ---------------------------------------------------------------- helpers: raw frames

const q = (text: string): string => JSON.stringify(text);

/** Argument arrays as raw text, each valid JSON the Socket.IO parser accepts, each refused by the hub. */
function rawArgsText(rng: Rng, event: ClientEventName): { text: string; how: string } {
  const e = q(event);
  const templates: Array<[string, () => string]> = [
    ['deep arrays 10k', () => `[${e},${nestedArraysText(10_000)}]`],
    ['deep arrays 100k', () => `[${e},${nestedArraysText(100_000)}]`],
    ['deep objects 10k', () => `[${e},${nestedObjectsText(10_000)}]`],
    ['deep field', () => `[${e},{"taskId":${nestedArraysText(10_000)},"token":"t"}]`],
    [
      'deep result',
      () =>
        `[${e},{"taskId":"a","token":"b","result":${nestedArraysText(rng.pick([65, 10_000, 100_000]))}}]`,
    ],
    [
      'deep lines',
      () => `[${e},{"taskId":"a","token":"b","lines":[${nestedObjectsText(10_000)}]}]`,
    ],
    [
      'duplicate keys',
      () =>
        `[${e},{"taskId":"a","token":"b","taskId":${rng.pick(['5', 'null', '{}', '"a:b"', '[]'])}}]`,
    ],
    [
      'odd numbers',
      () =>
        `[${e},{"taskId":"a","token":"b","progress":${rng.pick(['1e400', '-1e400', '-0', '100.0000000001', '101', '1E+2000', '-1e-400'])},"x":1}]`,
    ],
    [
      'odd strings',
      () =>
        `[${e},{"taskId":"${rng.pick(['\\ud800', '\\u0000', '\\udfff\\ud800', 'a\\u2028b', '\\ufeff'])}","token":"t"}]`,
    ],
    ['proto', () => `[${e},{"__proto__":{"taskId":"a","token":"b"}}]`],
    ['proto null', () => `[${e},{"taskId":"a","token":"b","__proto__":null}]`],
    ['constructor', () => `[${e},{"constructor":{"prototype":{"polluted":true}}}]`],
    ['placeholder', () => `[${e},{"_placeholder":true,"num":0}]`],
    [
      'near frame limit',
      () =>
        `[${e},{"taskId":"a","token":"b","lines":["${'x'.repeat(MAX_MESSAGE_BYTES - 4096)}"],"x":1}]`,
    ],
    ['missing payload', () => `[${e}]`],
    ['extra argument', () => `[${e},{},1]`],
    ['extra arguments', () => `[${e},{"taskId":"a","token":"b"},{},{},{}]`],
  ];
  const [how, make] = rng.chance(0.02)
    ? (templates.find(([name]) => name === 'near frame limit') as [string, () => string])
    : rng.pick(templates.filter(([name]) => name !== 'near frame limit'));
  return { text: make(), how };
}

function rawOddNameText(rng: Rng): { text: string; how: string } {
  return rng.pick<{ text: string; how: string }>([
    { text: '[5,{}]', how: 'numeric event' },
    { text: '[1e400,{}]', how: 'infinite event' },
    { text: '[-0]', how: 'negative zero event' },
    { text: `[${q('x'.repeat(100_000))},{}]`, how: 'long event name' },
    { text: '["TASK:ACCEPT",{"taskId":"a","token":"b"}]', how: 'case variant' },
    { text: '["task:accept\\u0000",{"taskId":"a","token":"b"}]', how: 'nul in name' },
    { text: '["error",{}]', how: 'error event' },
  ]);
}

/** Is this argument array refused by the hub's schemas (and accepted by the Socket.IO parser)? */
function refusedByHub(args: unknown[]): boolean {
  const [name, ...rest] = args;
  if (typeof name !== 'string' || !(CLIENT_EVENTS as string[]).includes(name)) return true;
  if (rest.length !== 1) return true;
  return !(CLIENT_EVENT_SCHEMAS[name as ClientEventName] as ZodType).safeParse(rest[0]).success;
}

function parserAccepts(text: string): unknown[] | undefined {
  try {
    const args = JSON.parse(text) as unknown;
    if (!Array.isArray(args) || args.length === 0) return undefined;
    const [name] = args as unknown[];
    if (typeof name === 'number') return args as unknown[];
    if (typeof name === 'string' && !RESERVED_EVENTS.includes(name)) return args as unknown[];
    return undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- helpers: handshake

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return Object.prototype.toString.call(value) === '[object Object]';
}

/**
 * The auth a CONNECT packet `40/agent,<text>` carries, as the Socket.IO parser reads it: leading
 * digits are an ack id (so `100` is a CONNECT without auth), the rest must be JSON.
 */
function connectPayload(text: string): { ok: true; value: unknown } | { ok: false } {
  const digits = /^[0-9]+/.exec(text)?.[0] ?? '';
  const rest = text.slice(digits.length);
  if (rest === '') return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(rest) as unknown };
  } catch {
    return { ok: false };
  }
}

/** What the hub must answer to this handshake auth, or 'connects' when it is acceptable. */
function expectedHandshake(
  value: unknown,
  identities: Map<string, Identity>,
): ErrorCode | 'closed' | 'connects' {
  if (value === undefined) return 'E_VALIDATION'; // no auth at all: the hub sees {}
  if (!isPlainObject(value)) return 'closed'; // the Socket.IO parser refuses a non-object CONNECT
  const parsed = handshakeAuthSchema.safeParse(value);
  if (!parsed.success) {
    const protocol = (value as { protocol?: unknown }).protocol;
    return typeof protocol === 'number' && protocol !== PROTOCOL_VERSION
      ? 'E_PROTOCOL_VERSION'
      : 'E_VALIDATION';
  }
  if (parsed.data.protocol !== PROTOCOL_VERSION) return 'E_PROTOCOL_VERSION';
  const known = identities.get(parsed.data.agentId);
  if (!known || known.token !== parsed.data.token) return 'E_UNAUTHORIZED';
  if (known.allowed && parsed.data.queues.some((queue) => !known.allowed?.includes(queue))) {
    return 'E_FORBIDDEN';
  }
  return 'connects';
}

function validAuth(rng: Rng, identities: Map<string, Identity>): Record<string, unknown> {
  const who = rng.pick(['unknown', FUZZ_AGENT.id, LIMITED_AGENT.id, 'wrong-token'] as const);
  const agentId =
    who === 'unknown'
      ? `nobody-${rng.string(rng.int(1, 20))}`
      : who === 'wrong-token'
        ? FUZZ_AGENT.id
        : who;
  const real = identities.get(agentId)?.token;
  const auth: Record<string, unknown> = {
    agentId,
    token: who === 'unknown' || who === 'wrong-token' || !real ? `agc_${rng.string(43)}` : real,
    protocol: PROTOCOL_VERSION,
    queues: who === LIMITED_AGENT.id ? ['only-q'] : ['fz'],
    sidecarVersion: '0.0.0-fuzz',
  };
  if (rng.chance(0.3)) auth.labels = { host: 'fuzz' };
  if (rng.chance(0.2)) auth.current = { taskId: 'tx', token: 'ty', state: 'working' };
  return auth;
}

const HANDSHAKE_BOUNDARIES: Boundary[] = [
  () => ['agentId', 'a'.repeat(129)],
  () => ['agentId', ''],
  (rng) => ['agentId', rng.pick(['a:b', '{x}', '.x', 'a b', 'é'])],
  () => ['token', ''],
  () => ['token', 't'.repeat(513)],
  (rng) => ['protocol', rng.pick([0, 2, -1, 1.5, 1_000_001, '1', null, 1e308])],
  () => ['queues', []],
  () => ['queues', Array.from({ length: 33 }, (_, i) => `q${i}`)],
  (rng) => ['queues', [rng.pick(['', 'a:b', 'q'.repeat(65), 5])]],
  () => ['queues', 'fz'],
  () => ['labels', Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']))],
  () => ['labels', { ['k'.repeat(65)]: 'v' }],
  () => ['labels', { k: 'v'.repeat(257) }],
  () => ['labels', { k: 5 }],
  () => ['sidecarVersion', ''],
  () => ['sidecarVersion', 'v'.repeat(65)],
  (rng) => ['current', rng.pick([{}, { taskId: 'a', token: 'b', state: 'idle' }, 'x', []])],
];

function handshakeCase(
  rng: Rng,
  identities: Map<string, Identity>,
): { text: string; expect: ErrorCode | 'closed'; how: string } {
  for (let attempt = 0; attempt < 30; attempt++) {
    const roll = rng.next();
    let text: string;
    let how: string;
    if (roll < 0.55) {
      const mutated = mutate(rng, validAuth(rng, identities), HANDSHAKE_BOUNDARIES);
      text = JSON.stringify(mutated.value) ?? 'null';
      how = `mutated ${mutated.how}`;
    } else if (roll < 0.75) {
      const auth = validAuth(rng, identities);
      if (rng.chance(0.3)) auth.protocol = rng.pick([0, 2, 3, 1_000_000]);
      if (rng.chance(0.3) && auth.agentId === LIMITED_AGENT.id) auth.queues = ['only-q', 'other'];
      text = JSON.stringify(auth);
      how = 'well-formed, refused';
    } else if (roll < 0.92) {
      const real = identities.get(FUZZ_AGENT.id)?.token ?? '';
      const fields = `"token":${q(real)},"protocol":1,"queues":["fz"],"sidecarVersion":"x"`;
      [how, text] = rng.pick<[string, string]>([
        ['deep agentId', `{"agentId":${nestedArraysText(10_000)},${fields}}`],
        ['deep labels', `{"agentId":"fuzz-f",${fields},"labels":${nestedObjectsText(10_000)}}`],
        ['deep auth', nestedObjectsText(10_000)],
        ['duplicate agentId', `{"agentId":"fuzz-f",${fields},"agentId":5}`],
        ['proto', `{"__proto__":{"agentId":"fuzz-f"},"agentId":"fuzz-f",${fields}}`],
        ['constructor', `{"agentId":"fuzz-f",${fields},"constructor":{"prototype":{"x":1}}}`],
        [
          'infinite protocol',
          `{"agentId":"fuzz-f","token":${q(real)},"protocol":1e400,"queues":["fz"],"sidecarVersion":"x"}`,
        ],
        ['lone surrogate', `{"agentId":"\\ud800",${fields}}`],
        ['big labels', `{"agentId":"nobody",${fields},"labels":{"k":"${'v'.repeat(MiB)}"}}`],
        ['empty object', '{}'],
      ]);
    } else {
      [how, text] = rng.pick<[string, string]>([
        ['array auth', '[]'],
        ['string auth', '"fuzz-f"'],
        ['number auth', '1'],
        ['null auth', 'null'],
        ['true auth', 'true'],
        ['deep array auth', nestedArraysText(10_000)],
      ]);
    }
    const arriving = connectPayload(text);
    const expect = arriving.ok ? expectedHandshake(arriving.value, identities) : 'closed';
    if (expect !== 'connects') return { text, expect, how };
  }
  return { text: '{}', expect: 'E_VALIDATION', how: 'empty object' };
}

// ---------------------------------------------------------------- helpers: HTTP

interface HttpCase {
  route: string;
  kind: string;
  method: 'GET' | 'POST' | 'DELETE' | 'PUT' | 'PATCH';
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  chunked?: boolean;
  expect: readonly ErrorCode[];
}

const ADMIN = { authorization: `Bearer ${TEST_ADMIN_KEY}` };
const JSON_HEADERS = { ...ADMIN, 'content-type': 'application/json' };

async function sendHttp(
  baseUrl: string,
  c: HttpCase,
): Promise<{ status: number; text: string } | { error: string }> {
  const headers = c.headers ?? (c.body === undefined ? ADMIN : JSON_HEADERS);
  if (c.body !== undefined && Buffer.byteLength(c.body) > MiB)
    return sendLargeBody(baseUrl, c, headers);
  try {
    const response = await fetch(`${baseUrl}${c.path}`, {
      method: c.method,
      headers,
      ...(c.body === undefined ? {} : { body: c.body }),
      signal: AbortSignal.timeout(20_000),
    });
    return { status: response.status, text: await response.text() };
  } catch (err) {
    const cause = (err as { cause?: { message?: unknown } }).cause;
    const why = typeof cause?.message === 'string' ? `: ${cause.message}` : '';
    return { error: `${(err as Error).message}${why}` };
  }
}

/**
 * Sends a big body (Content-Length, or chunked) so that the hub's early answer is read: a hub
 * refusing a body over the limit answers and closes without reading the rest, and a client still
 * writing then gets EPIPE/ECONNRESET instead of that answer. So: headers first (a Content-Length
 * over the limit is answered at once), then the body up to one byte over the limit, then (bounded)
 * waits for the answer before writing the rest.
 */
function sendLargeBody(
  baseUrl: string,
  c: HttpCase,
  headers: Record<string, string>,
): Promise<{ status: number; text: string } | { error: string }> {
  const body = Buffer.from(c.body ?? '');
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve) => {
    let answered = false;
    let finished = false;
    const progress = new EventEmitter();
    const req = httpRequest({
      hostname,
      port,
      path: c.path,
      method: c.method,
      headers: c.chunked ? headers : { ...headers, 'content-length': String(body.length) },
    });
    const finish = (result: { status: number; text: string } | { error: string }): void => {
      if (finished) return;
      finished = true;
      progress.emit('step');
      resolve(result);
      req.destroy();
    };
    req.on('response', (res) => {
      answered = true;
      progress.emit('step');
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        finish({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', (err) => finish({ error: err.message }));
      res.on('close', () =>
        finish({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.on('error', (err) => {
      progress.emit('step');
      if (!answered) finish({ error: err.message });
    });
    req.on('drain', () => progress.emit('step'));
    req.on('close', () => progress.emit('step'));
    req.setTimeout(20_000, () => finish({ error: 'timed out' }));
    const answer = async (ms: number): Promise<void> => {
      const deadline = Date.now() + ms;
      while (!answered && !finished && Date.now() < deadline) {
        await withTimeout(once(progress, 'step'), deadline - Date.now(), 'an early answer').catch(
          () => undefined,
        );
      }
    };
    const write = async (from: number, to: number): Promise<void> => {
      for (let i = from; i < to && !answered && !finished; i += 64 * 1024) {
        if (!req.write(body.subarray(i, Math.min(to, i + 64 * 1024)))) await once(progress, 'step');
      }
    };
    req.flushHeaders();
    void (async () => {
      if (!c.chunked) await answer(1000);
      const overLimit = Math.min(body.length, MAX_MESSAGE_BYTES + 1);
      await write(0, overLimit);
      if (body.length > MAX_MESSAGE_BYTES) await answer(2000);
      await write(overLimit, body.length);
      if (!answered && !finished) req.end();
    })();
  });
}

/** The failure of a response, or undefined when it is a 4xx `{error:{code}}` with an expected code. */
function judgeHttp(
  c: HttpCase,
  res: { status: number; text: string } | { error: string },
): string | undefined {
  if ('error' in res) return `request failed (${res.error.slice(0, 80)})`;
  let code: unknown;
  try {
    code = (JSON.parse(res.text) as { error?: { code?: unknown } }).error?.code;
  } catch {
    return `${res.status} with a non-JSON body`;
  }
  if (res.status >= 500) return `${res.status} ${String(code)}`;
  if (!isErrorCode(code)) return `${res.status} without {error:{code}}`;
  if (!c.expect.includes(code)) return `${res.status} ${code} (expected ${c.expect.join('|')})`;
  if (ERROR_CODES[code].httpStatus !== res.status) return `${code} with status ${res.status}`;
  return undefined;
}

/** A JSON body its schema refuses, or raw text that is no acceptable JSON at all. */
function malformedBody(
  rng: Rng,
  schema: ZodType,
  valid: (rng: Rng) => Record<string, unknown>,
  boundaries: Boundary[],
): { body: string; kind: string } {
  const roll = rng.next();
  if (roll < 0.08) {
    return {
      body: rng.pick([
        '',
        '{',
        '{"payload":}',
        "{'payload':1}",
        '{"payload":1,}',
        '{"payload":NaN}',
        '{"payload":1}garbage',
        '{"payload":"\\x"}',
        '{"payload":1 /* comment */}',
        '\u0000',
        'null null',
        '{"payload":1}{"payload":2}',
        `{"payload":"${'\\'.repeat(3)}"}`,
        '{"a":' + '['.repeat(5000),
      ]),
      kind: 'not-json',
    };
  }
  if (roll < 0.13) {
    return {
      body: rng.pick([
        nestedArraysText(10_000),
        nestedObjectsText(10_000),
        `{"queue":"${SINK_QUEUE}","payload":${nestedArraysText(10_000)}}`,
        `{"queue":"${SINK_QUEUE}","payload":${nestedObjectsText(10_000)}}`,
        `{"queue":"${SINK_QUEUE}","payload":${nestedArraysText(100_000)}}`,
        `{"agentId":${nestedArraysText(10_000)}}`,
        `{"reason":${nestedArraysText(10_000)}}`,
      ]),
      kind: 'deep',
    };
  }
  if (roll < 0.18) {
    // the injected key is the only one of its name: a later duplicate would replace it (last wins)
    const [key, injected] = rng.pick<[string, string]>([
      ['__proto__', '{"polluted":true}'],
      ['constructor', '{"prototype":{"polluted":true}}'],
      ['payload', '{"__proto__":{"isAdmin":true}}'],
      ['labels', '{"__proto__":"x"}'],
      ['payload', '{"a":{"constructor":{"prototype":{"isAdmin":true}}}}'],
    ]);
    const rest = Object.fromEntries(Object.entries(valid(rng)).filter(([name]) => name !== key));
    const inner = JSON.stringify(rest).slice(1, -1);
    return {
      body: `{${q(key)}:${injected}${inner ? `,${inner}` : ''}}`,
      kind: 'proto',
    };
  }
  for (let attempt = 0; attempt < 20; attempt++) {
    const mutated = mutate(rng, valid(rng), boundaries);
    const text = JSON.stringify(mutated.value);
    if (text === undefined || Buffer.byteLength(text) > MAX_MESSAGE_BYTES - 4096) continue;
    if (!schema.safeParse(JSON.parse(text) as unknown).success) {
      return { body: text, kind: mutated.how === 'not-object' ? 'not-object' : 'mutated' };
    }
  }
  return { body: JSON.stringify({ ...valid(rng), unexpected: 1 }), kind: 'mutated' };
}

/** Bytes that are not UTF-8: truncated sequences, overlong forms, surrogates, above U+10FFFF. */
const BAD_UTF8: ReadonlyArray<readonly number[]> = [
  [0xff],
  [0xfe, 0xff],
  [0xc3],
  [0xe2, 0x82],
  [0xc0, 0xaf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0x80],
];

/** A body that would be valid if its invalid bytes were silently replaced: it must be refused anyway. */
function invalidUtf8Body(rng: Rng, template: string): Buffer {
  const [before, after] = template.split('@@');
  return Buffer.concat([
    Buffer.from(before ?? ''),
    Buffer.from(rng.pick(BAD_UTF8)),
    Buffer.from(after ?? ''),
  ]);
}

const WRONG_CONTENT_TYPES = [
  'text/plain',
  'text/plain; charset=utf-8',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz',
  'application/xml',
  'text/html',
  'application/octet-stream',
  'application/jsonx',
  'application/json-patch+json',
  'text/json',
  'application/javascript',
  'image/png',
];

function sizedBody(totalBytes: number, prefix: string, suffix: string): string {
  return prefix + 'x'.repeat(Math.max(0, totalBytes - prefix.length - suffix.length)) + suffix;
}

const BAD_PERCENT = ['%zz', '%', 'a%2', '%E0%A4%A', '%C0%AF', '%FF', '%ED%A0%80', '%F4%90%80%80'];
const FORBIDDEN_ID_CHARS = [
  ':',
  '{',
  '}',
  ' ',
  '/',
  '\\',
  '?',
  '#',
  '%',
  '@',
  '*',
  '"',
  "'",
  '<',
  '>',
  '\u0000',
  '\n',
  'é',
  '😀',
  '\u202e',
  '+',
  ',',
];

/** A path segment for an id and what the hub must answer for it. */
function idSegment(
  rng: Rng,
  notFound: ErrorCode,
  internalNames: readonly string[],
): { segment: string; expect: ErrorCode[]; kind: string } {
  const roll = rng.next();
  if (roll < 0.15)
    return { segment: rng.pick(internalNames), expect: [notFound], kind: 'id-internal-name' };
  if (roll < 0.3) {
    return {
      segment: `nobody-${rng.string(rng.int(1, 40))}`,
      expect: [notFound],
      kind: 'id-unknown',
    };
  }
  if (roll < 0.4)
    return { segment: rng.pick(BAD_PERCENT), expect: ['E_VALIDATION'], kind: 'id-bad-percent' };
  if (roll < 0.45) {
    // valid ids at the length limit (101 to 128 characters) must reach the route, not be cut off
    return {
      segment: `a${rng.string(rng.int(100, 127))}`,
      expect: [notFound],
      kind: 'id-at-length-limit',
    };
  }
  for (let attempt = 0; attempt < 10; attempt++) {
    const pick = rng.next();
    const raw =
      pick < 0.3
        ? `a${rng.string(rng.int(128, 3000))}`
        : pick < 0.7
          ? `${rng.string(rng.int(1, 20))}${rng.pick(FORBIDDEN_ID_CHARS)}${rng.string(rng.int(0, 20))}`
          : pick < 0.85
            ? `${rng.pick(['.', '-', '_'])}${rng.string(rng.int(0, 20))}`
            : rng.pick(NASTY_STRINGS);
    if (raw === '' || raw === '.' || raw === '..') continue;
    let segment: string;
    try {
      segment = encodeURIComponent(raw);
    } catch {
      continue; // a lone surrogate cannot be percent-encoded as UTF-8
    }
    const valid = taskIdSchema.safeParse(raw).success && agentIdSchema.safeParse(raw).success;
    return {
      segment,
      expect: valid ? [notFound] : ['E_VALIDATION'],
      kind: valid ? 'id-unknown' : 'id-invalid',
    };
  }
  return { segment: '%zz', expect: ['E_VALIDATION'], kind: 'id-bad-percent' };
}

/** A query object the way a query string parser builds it: own data properties, repeats as arrays. */
function queryObject(search: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of new URLSearchParams(search)) {
    const existing: unknown = Object.prototype.hasOwnProperty.call(out, key) ? out[key] : undefined;
    const next =
      existing === undefined
        ? value
        : Array.isArray(existing)
          ? [...(existing as unknown[]), value]
          : [existing, value];
    Object.defineProperty(out, key, {
      value: next,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/** Whether the route would take the cursor (its own decoder: the format is the route's). */
function cursorIsValid(raw: string): boolean {
  try {
    decodeCursor(raw);
    return true;
  } catch {
    return false;
  }
}

const b64 = (text: string): string => Buffer.from(text).toString('base64url');

/** A query string the route's schema refuses (or an unusable cursor). */
function malformedQuery(
  rng: Rng,
  schema: ZodType,
  bad: Record<string, readonly string[]>,
  good: Record<string, readonly string[]>,
): string {
  for (let attempt = 0; attempt < 30; attempt++) {
    const params = new URLSearchParams();
    for (const [key, values] of Object.entries(good))
      if (rng.chance(0.4)) params.append(key, rng.pick(values));
    const changes = rng.int(1, 3);
    for (let i = 0; i < changes; i++) {
      const kind = rng.pick(['bad', 'bad', 'repeat', 'unknown'] as const);
      if (kind === 'bad') {
        const key = rng.pick(Object.keys(bad));
        params.set(key, rng.pick(bad[key] ?? ['']));
      } else if (kind === 'repeat') {
        const key = rng.pick(Object.keys(good));
        params.append(key, rng.pick(good[key] ?? ['']));
        params.append(key, rng.pick(good[key] ?? ['']));
      } else {
        params.append(
          rng.pick([
            ...PROTO_KEYS,
            'toString',
            'hasOwnProperty',
            'x',
            'limit[]',
            'queue.x',
            'a'.repeat(500),
          ]),
          rng.pick(['1', '', 'x']),
        );
      }
    }
    const search = params.toString();
    if (search.length > 12_000) continue;
    const object = queryObject(search);
    const parsed = schema.safeParse(object);
    const cursor = object.cursor;
    if (
      !parsed.success ||
      (typeof cursor === 'string' && cursor !== '' && !cursorIsValid(cursor))
    ) {
      return search;
    }
  }
  return 'unknown=1';
}

const LIST_BAD: Record<string, readonly string[]> = {
  limit: [
    '0',
    '501',
    '-1',
    '1.5',
    'abc',
    '',
    '1e3',
    ' ',
    'Infinity',
    '9'.repeat(400),
    '0.0001',
    '0x',
  ],
  state: ['', 'WAITING', 'done', 'active', 'x'.repeat(300), 'cancelled '],
  queue: ['', 'a:b', '{x}', 'q'.repeat(65), ' ', '.q', '%zz', 'é'],
  cursor: [
    'x'.repeat(MAX_CURSOR_LENGTH + 1),
    'x'.repeat(5000),
    '!!!',
    b64('{"p":-1,"o":0}'),
    b64('{"p":1.5,"o":0}'),
    b64('[]'),
    b64('null'),
    b64('"x"'),
    b64('{"__proto__":{"p":1,"o":1}}'),
    b64('{"p":"1","o":"0"}'),
    b64('{"q":"fz","t":"failed","o":1e20}'),
    b64('{"q":"fz","t":"wait","o":-1}'),
    b64('{"q":"fz","t":"waiting","o":0}'),
    b64(nestedArraysText(100)),
  ],
};
const LIST_GOOD: Record<string, readonly string[]> = {
  limit: ['1', '50', '500'],
  state: ['waiting', 'completed', 'failed'],
  queue: ['fz', SINK_QUEUE],
};
const LOGS_BAD: Record<string, readonly string[]> = {
  start: ['-1', 'abc', '1.5', 'x'.repeat(100), '-0.5'],
  limit: ['0', '1001', '-5', 'abc', '1e9', '0.5'],
};
const LOGS_GOOD: Record<string, readonly string[]> = { start: ['0', '1'], limit: ['1', '100'] };

const TASK_BOUNDARIES: Boundary[] = [
  () => ['idempotencyKey', 'k'.repeat(257)],
  () => ['idempotencyKey', ''],
  () => ['labels', Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']))],
  () => ['labels', { ['k'.repeat(65)]: 'v' }],
  () => ['labels', { k: 'v'.repeat(257) }],
  () => ['labels', { '': 'v' }],
  (rng) => ['attempts', rng.pick([0, 101, 1.5, -1, '3'])],
  (rng) => ['priority', rng.pick([-1, 2_097_153, 0.5, '1'])],
  (rng) => ['delayMs', rng.pick([-1, 365 * DAY_MS + 1, 0.5])],
  (rng) => ['timeoutMs', rng.pick([99, 7 * DAY_MS + 1, 0])],
  (rng) => [
    'backoff',
    rng.pick<unknown>([
      { type: 'linear', delayMs: 1 },
      { type: 'fixed', delayMs: DAY_MS + 1 },
      { type: 'fixed' },
      'fixed',
    ]),
  ],
  (rng) => ['queue', rng.pick(['q'.repeat(65), 'a:b', '', '{x}', '.q', 5])],
  (rng) => ['payload', nestedArrays(rng.int(65, 300))],
  (rng) => ['payload', nestedObjects(rng.int(65, 200))],
  () => ['payload', 'x'.repeat(MAX_PAYLOAD_BYTES)],
  () => ['idempotencyKey', 'k'.repeat(256)],
  () => [
    'labels',
    Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, 'v'.repeat(256)])),
  ],
];

const validTask = (rng: Rng): Record<string, unknown> => ({
  queue: SINK_QUEUE,
  payload: rng.chance(0.5) ? { n: rng.int(0, 9) } : rng.pick<unknown>(['p', 1, [1, 2], null]),
  ...(rng.chance(0.3) ? { attempts: rng.int(1, 100) } : {}),
  ...(rng.chance(0.2) ? { priority: rng.int(0, 10) } : {}),
  ...(rng.chance(0.2) ? { timeoutMs: rng.int(100, 10_000) } : {}),
  ...(rng.chance(0.2) ? { idempotencyKey: `k${rng.string(10)}` } : {}),
  ...(rng.chance(0.2) ? { labels: { a: 'b' } } : {}),
  ...(rng.chance(0.1) ? { backoff: { type: 'fixed', delayMs: 10 } } : {}),
});

const validAgentBody = (rng: Rng): Record<string, unknown> => ({
  agentId: `nobody-${rng.string(rng.int(1, 20))}`,
  ...(rng.chance(0.5) ? { queues: ['q1'] } : {}),
});

const AGENT_BOUNDARIES: Boundary[] = [
  () => ['agentId', 'a'.repeat(129)],
  () => ['agentId', ''],
  (rng) => ['agentId', rng.pick(['a:b', '{x}', '.x', 'a b', 'é', '-x'])],
  () => ['queues', []],
  () => ['queues', Array.from({ length: 33 }, (_, i) => `q${i}`)],
  (rng) => ['queues', [rng.pick(['', 'a:b', 'q'.repeat(65), 5])]],
  () => ['queues', 'q1'],
];

const validCancelBody = (rng: Rng): Record<string, unknown> =>
  rng.chance(0.5) ? {} : { reason: `because ${rng.string(5)}` };
const CANCEL_BOUNDARIES: Boundary[] = [
  () => ['reason', ''],
  () => ['reason', 'r'.repeat(1025)],
  (rng) => ['reason', rng.pick<unknown>([5, null, [], {}])],
];

const MALFORMED_AUTH = (): string[] => [
  '',
  'Bearer',
  'Bearer ',
  `Bearer ${TEST_ADMIN_KEY}x`,
  `Bearer ${TEST_ADMIN_KEY.slice(0, -1)}`,
  `Bearer x${TEST_ADMIN_KEY}`,
  `bearer  ${TEST_ADMIN_KEY}`,
  `Basic ${Buffer.from('admin:wrong').toString('base64')}`,
  `Basic ${Buffer.from(TEST_ADMIN_KEY).toString('base64')}`,
  'Basic !!!',
  `Basic ${Buffer.from(`:${TEST_ADMIN_KEY}x`).toString('base64')}`,
  `Token ${TEST_ADMIN_KEY}`,
  TEST_ADMIN_KEY,
  `Bearer ${'a'.repeat(8000)}`,
  `Bearer ${TEST_ADMIN_KEY.toUpperCase()}`,
  'Digest username="admin"',
  `Bearer\t${TEST_ADMIN_KEY}`,
];

/** All HTTP cases of the barrage, generated in order from the seed. */
function httpCases(rng: Rng, completedTaskId: string): Array<() => HttpCase> {
  const makers: Array<[number, () => HttpCase]> = [];
  const add = (n: number, make: () => HttpCase): void => {
    makers.push([n * SCALE, make]);
  };
  const agentNames = ['agents', 'idle', 'events', 'replicas', 'queues', 'nobody'];
  /** The route with an id segment that names no task, or is no valid id. */
  const taskIdCase = (route: string, method: HttpCase['method'], suffix = ''): HttpCase => {
    const { segment, expect, kind } = idSegment(rng, 'E_TASK_NOT_FOUND', BULLMQ_KEY_NAMES);
    return { route, kind, method, path: `/v1/tasks/${segment}${suffix}`, expect };
  };
  /** A JSON body of `bytes` (over the limit): `prefix`, then x up to `bytes`, then `"}`. */
  const tooLarge = (
    route: string,
    method: HttpCase['method'],
    path: string,
    prefix: string,
    bytes = MAX_MESSAGE_BYTES + rng.int(1, 4096),
    chunked?: boolean,
  ): HttpCase => ({
    route,
    kind: 'too-large',
    method,
    path,
    body: sizedBody(bytes, prefix, '"}'),
    ...(chunked === undefined ? {} : { chunked }),
    expect: ['E_PAYLOAD_TOO_LARGE'],
  });
  /** A POST whose body is valid but for its invalid UTF-8 bytes (`@@` in `template`). */
  const badUtf8 = (route: string, path: string, template: string): HttpCase => ({
    route,
    kind: 'invalid-utf8',
    method: 'POST',
    path,
    body: invalidUtf8Body(rng, template),
    expect: ['E_VALIDATION'],
  });
  /** A POST of a valid JSON body labelled as another content type. */
  const wrongType = (route: string, path: string, contentType: string, body: string): HttpCase => ({
    route,
    kind: 'content-type',
    method: 'POST',
    path,
    headers: { ...ADMIN, 'content-type': contentType },
    body,
    expect: ['E_VALIDATION'],
  });

  add(1200, () => {
    const roll = rng.next();
    const route = 'POST /v1/tasks';
    const task = JSON.stringify({ queue: SINK_QUEUE, payload: { n: 1 } });
    if (roll < 0.05) {
      return badUtf8(
        route,
        '/v1/tasks',
        rng.pick([
          `{"queue":"${SINK_QUEUE}","payload":"a@@b"}`,
          `{"queue":"${SINK_QUEUE}","payload":{"k":"@@"}}`,
          `{"queue":"${SINK_QUEUE}","payload":1,"labels":{"a":"@@"}}`,
          `{"queue":"${SINK_QUEUE}","payload":1,"idempotencyKey":"k@@"}`,
        ]),
      );
    }
    if (roll < 0.09) return wrongType(route, '/v1/tasks', rng.pick(WRONG_CONTENT_TYPES), task);
    if (roll < 0.1) {
      return {
        route,
        kind: 'content-type',
        method: 'POST',
        path: '/v1/tasks',
        headers: ADMIN,
        body: Buffer.from(task),
        expect: ['E_VALIDATION'],
      };
    }
    if (roll < 0.13) {
      return tooLarge(
        route,
        'POST',
        '/v1/tasks',
        `{"queue":"${SINK_QUEUE}","payload":"`,
        MAX_MESSAGE_BYTES + rng.pick([1, 100, 64 * 1024, MiB]),
        rng.chance(0.5),
      );
    }
    if (roll < 0.15) {
      return {
        route,
        kind: 'near-limit',
        method: 'POST',
        path: '/v1/tasks',
        body: sizedBody(
          rng.pick([MAX_PAYLOAD_BYTES + 64, MAX_MESSAGE_BYTES - 64, MAX_MESSAGE_BYTES]),
          `{"queue":"${SINK_QUEUE}","payload":"`,
          '"}',
        ),
        chunked: rng.chance(0.3),
        expect: ['E_VALIDATION'],
      };
    }
    const { body, kind } = malformedBody(
      rng,
      createTaskBodySchema as ZodType,
      validTask,
      TASK_BOUNDARIES,
    );
    return { route, kind, method: 'POST', path: '/v1/tasks', body, expect: ['E_VALIDATION'] };
  });

  add(400, () => ({
    route: 'GET /v1/tasks',
    kind: 'query',
    method: 'GET',
    path: `/v1/tasks?${malformedQuery(rng, listTasksQuerySchema as ZodType, LIST_BAD, LIST_GOOD)}`,
    expect: ['E_VALIDATION'],
  }));

  add(300, () => taskIdCase('GET /v1/tasks/:id', 'GET'));

  add(300, () => {
    if (rng.chance(0.5)) return taskIdCase('GET /v1/tasks/:id/logs', 'GET', '/logs');
    return {
      route: 'GET /v1/tasks/:id/logs',
      kind: 'query',
      method: 'GET',
      path: `/v1/tasks/${completedTaskId}/logs?${malformedQuery(rng, taskLogsQuerySchema as ZodType, LOGS_BAD, LOGS_GOOD)}`,
      expect: ['E_VALIDATION'],
    };
  });

  add(400, () => {
    const route = 'POST /v1/tasks/:id/cancel';
    const roll = rng.next();
    if (roll < 0.35) return taskIdCase(route, 'POST', '/cancel');
    const path = `/v1/tasks/${completedTaskId}/cancel`;
    if (roll < 0.4) return badUtf8(route, path, '{"reason":"r@@"}');
    if (roll < 0.43) return tooLarge(route, 'POST', path, '{"reason":"');
    if (roll < 0.46) {
      const notPlainText = WRONG_CONTENT_TYPES.filter((t) => !t.startsWith('text/plain'));
      return wrongType(route, path, rng.pick(notPlainText), '{"reason":"r"}');
    }
    if (roll < 0.5) {
      return { route, kind: 'finished task', method: 'POST', path, expect: ['E_INVALID_STATE'] };
    }
    const schema = {
      safeParse: (v: unknown) => cancelTaskBodySchema.safeParse(v ?? {}),
    } as unknown as ZodType;
    const { body, kind } = malformedBody(rng, schema, validCancelBody, CANCEL_BOUNDARIES);
    return { route, kind, method: 'POST', path, body, expect: ['E_VALIDATION'] };
  });

  add(200, () => {
    const route = 'POST /v1/tasks/:id/retry';
    const roll = rng.next();
    if (roll < 0.6) return taskIdCase(route, 'POST', '/retry');
    const path = `/v1/tasks/${completedTaskId}/retry`;
    if (roll < 0.7)
      return { route, kind: 'finished task', method: 'POST', path, expect: ['E_INVALID_STATE'] };
    if (roll < 0.8) return tooLarge(route, 'POST', path, '{"x":"');
    return {
      route,
      kind: 'not-json',
      method: 'POST',
      path,
      body: rng.pick(['{', '', '{"a":}', nestedArraysText(10_000).slice(1), 'null null']),
      expect: ['E_VALIDATION'],
    };
  });

  add(500, () => {
    const route = 'POST /v1/agents';
    const roll = rng.next();
    if (roll < 0.05) {
      const templates = ['{"agentId":"nobody-@@"}', '{"agentId":"nobody-1","queues":["q@@"]}'];
      return badUtf8(route, '/v1/agents', rng.pick(templates));
    }
    if (roll < 0.08) {
      const bytes = MAX_MESSAGE_BYTES + rng.int(1, 4096);
      return tooLarge(route, 'POST', '/v1/agents', '{"agentId":"', bytes, rng.chance(0.5));
    }
    if (roll < 0.12) {
      const contentType = rng.pick(WRONG_CONTENT_TYPES);
      return wrongType(
        route,
        '/v1/agents',
        contentType,
        JSON.stringify({ agentId: `nobody-${rng.string(8)}` }),
      );
    }
    const { body, kind } = malformedBody(
      rng,
      createAgentBodySchema as ZodType,
      validAgentBody,
      AGENT_BOUNDARIES,
    );
    return { route, kind, method: 'POST', path: '/v1/agents', body, expect: ['E_VALIDATION'] };
  });

  const agentIdRoute =
    (
      route: string,
      method: HttpCase['method'],
      suffix: string,
      withBodies: boolean,
    ): (() => HttpCase) =>
    () => {
      if (withBodies && rng.chance(0.25)) {
        const path = `/v1/agents/nobody-${rng.string(8)}${suffix}`;
        if (rng.chance(0.3)) return tooLarge(route, method, path, '{"x":"');
        return {
          route,
          kind: 'not-json',
          method,
          path,
          body: rng.pick([
            '{',
            '{"a":}',
            "{'a':1}",
            '{"__proto__":{"x":1}}',
            nestedArraysText(10_000).slice(1),
          ]),
          expect: ['E_VALIDATION'],
        };
      }
      const { segment, expect, kind } = idSegment(rng, 'E_AGENT_NOT_FOUND', agentNames);
      return { route, kind, method, path: `/v1/agents/${segment}${suffix}`, expect };
    };
  add(200, agentIdRoute('GET /v1/agents/:id', 'GET', '', false));
  add(200, agentIdRoute('DELETE /v1/agents/:id', 'DELETE', '', true));
  add(200, agentIdRoute('POST /v1/agents/:id/drain', 'POST', '/drain', true));
  add(200, agentIdRoute('POST /v1/agents/:id/resume', 'POST', '/resume', true));

  add(150, () =>
    rng.chance(0.6)
      ? {
          route: 'GET /v1/queues',
          kind: 'auth',
          method: 'GET',
          path: '/v1/queues',
          headers: { authorization: rng.pick(MALFORMED_AUTH()) },
          expect: ['E_UNAUTHORIZED'],
        }
      : {
          route: 'GET /v1/queues',
          kind: 'method',
          method: rng.pick(['PUT', 'PATCH', 'DELETE', 'POST'] as const),
          path: '/v1/queues',
          expect: ['E_NOT_FOUND'],
        },
  );

  add(300, () => {
    const target = rng.pick<[HttpCase['method'], string]>([
      ['POST', '/v1/tasks'],
      ['GET', '/v1/tasks'],
      ['GET', `/v1/tasks/${completedTaskId}`],
      ['GET', `/v1/tasks/${completedTaskId}/logs`],
      ['POST', `/v1/tasks/${completedTaskId}/cancel`],
      ['POST', `/v1/tasks/${completedTaskId}/retry`],
      ['POST', '/v1/agents'],
      ['GET', '/v1/agents'],
      ['GET', `/v1/agents/${FUZZ_AGENT.id}`],
      ['DELETE', `/v1/agents/${FUZZ_AGENT.id}`],
      ['POST', `/v1/agents/${FUZZ_AGENT.id}/drain`],
      ['POST', `/v1/agents/${FUZZ_AGENT.id}/resume`],
      ['GET', '/v1/queues'],
    ]);
    const authorization = rng.pick(MALFORMED_AUTH());
    const headers: Record<string, string> = authorization === '' ? {} : { authorization };
    return {
      route: 'admin key (any route)',
      kind: 'auth',
      method: target[0],
      path: target[1],
      headers,
      expect: ['E_UNAUTHORIZED'],
    };
  });

  const out: Array<() => HttpCase> = [];
  for (const [n, make] of makers) for (let i = 0; i < n; i++) out.push(make);
  return out;
}

/** The input counts for the reliability table: per-event and per-route counts folded. */
function summarizeCounts(all: Record<string, number>): string {
  const sum = (match: (key: string) => boolean): number =>
    Object.entries(all)
      .filter(([key]) => match(key))
      .reduce((total, [, n]) => total + n, 0);
  const events = CLIENT_EVENTS.map((event) => `socket ${event}`);
  const routes = Object.keys(all).filter((key) => key.startsWith('http '));
  const rest = Object.entries(all).filter(
    ([key]) => !events.includes(key) && !key.startsWith('http '),
  );
  return [
    `socket payloads ${sum((key) => events.includes(key))} (${events.length} events)`,
    ...rest.map(([key, n]) => `${key.replace(/^socket /, 'socket: ')} ${n}`),
    `HTTP ${sum((key) => key.startsWith('http '))} (${routes.length} routes incl. admin-key junk)`,
  ].join(', ');
}

// ---------------------------------------------------------------- helpers: agents and tasks

/** The handshake auth of one of the fuzz agents, as JSON text. */
function authText(
  agent: { id: string; queues: string[] },
  identities: Map<string, Identity>,
): string {
  return JSON.stringify({
    agentId: agent.id,
    token: identities.get(agent.id)!.token,
    protocol: PROTOCOL_VERSION,
    queues: agent.queues,
    sidecarVersion: '0.0.0-fuzz',
  });
}

/** A socket.io-client agent of one of the fuzz identities (not connected yet). */
function fuzzAgent(
  hubUrl: string,
  agent: { id: string; queues: string[] },
  identities: Map<string, Identity>,
): TestAgent {
  return new TestAgent(hubUrl, agent.id, identities.get(agent.id)!.token, agent.queues);
}

/** Each agent's state, as GET /v1/agents lists it. */
async function agentStates(hubUrl: string): Promise<Record<string, string>> {
  const listed = await api<{ agents: Array<{ agentId: string; state: string }> }>(
    hubUrl,
    'GET',
    '/v1/agents',
  );
  return Object.fromEntries(listed.body.agents.map((a) => [a.agentId, a.state]));
}

/** Creates a task on queue fz and runs it through `agent` to completion: its final view. */
async function runTask(
  hubUrl: string,
  agent: TestAgent,
  payload: unknown,
  result: unknown,
  logLines?: string[],
): Promise<TaskView> {
  const created = await api<{ id: string }>(hubUrl, 'POST', '/v1/tasks', { queue: 'fz', payload });
  expect(created.status).toBe(201);
  const assignment = await agent.assignmentOf(created.body.id);
  expect(await agent.accept(assignment)).toMatchObject({ ok: true });
  if (logLines) {
    const { token } = assignment;
    const ack = await agent.send('task:log', { taskId: created.body.id, token, lines: logLines });
    expect(ack).toMatchObject({ ok: true });
  }
  expect(await agent.complete(assignment, result)).toMatchObject({ ok: true });
  return eventually(
    async () => {
      const task = (await api<TaskView>(hubUrl, 'GET', `/v1/tasks/${created.body.id}`)).body;
      return task.state === 'completed' ? task : undefined;
    },
    { what: `task ${created.body.id} completed` },
  );
}

/** Sends `frame` and records a failure unless the hub closes the connection within 5 s. */
async function expectClosedAfter(
  socket: RawSocketIo,
  frame: string | Buffer,
  how: string,
  failures: FailureLog,
): Promise<void> {
  socket.sendFrame(frame);
  if ((await socket.waitClosed(5000)) === undefined) {
    failures.add(`${how}: connection still open`, how);
    socket.close();
  }
}

// ---------------------------------------------------------------- the scenario

jest.setTimeout(240_000);

describe('hostile input (fault scenario 7)', () => {
  beforeAll(async () => {
    console.log(`hostile input: seed ${SEED} (replay with FUZZ_SEED=${SEED})`);
    const redis = await startRedis();
    const prefix = `h${randomBytes(3).toString('hex')}`;
    const hub = await startHubProcess(redis.url, prefix, 'hub-hostile', {
      AUTH_FAIL_LIMIT: '1000000',
      // the barrage refuses thousands of events on one connection: not a flood to close here
      AGENT_FLOOD_REFUSALS: '1000000',
      PING_INTERVAL_MS: '5000',
      PING_TIMEOUT_MS: '5000',
      // the heap is read after full collections through the inspector (see the last phase)
      NODE_OPTIONS: '--inspect=127.0.0.1:0',
    });
    let captured = hub.output;
    const keep = (chunk: Buffer): void => {
      captured += chunk.toString('utf8');
    };
    hub.child.stdout?.on('data', keep);
    hub.child.stderr?.on('data', keep);
    const redisClient = new Redis(redis.url);

    const identities = new Map<string, Identity>();
    for (const agent of [FUZZ_AGENT, RAW_AGENT, CLOSING_AGENT]) {
      identities.set(agent.id, { token: await mintToken(hub.url, agent.id) });
    }
    identities.set(LIMITED_AGENT.id, {
      token: await mintToken(hub.url, LIMITED_AGENT.id, LIMITED_AGENT.allowed),
      allowed: LIMITED_AGENT.allowed,
    });

    const fuzz = fuzzAgent(hub.url, FUZZ_AGENT, identities);
    const fuzzDisconnects: string[] = [];
    fuzz.socket.on('disconnect', (reason) => fuzzDisconnects.push(reason));
    await fuzz.connect();
    const raw = await RawSocketIo.open(hub.url);
    expect((await raw.connect(authText(RAW_AGENT, identities))).kind).toBe('connected');

    // one real task, finished before the baseline: cancel/retry/logs get a real, finished target
    const setupTask = await runTask(hub.url, fuzz, { setup: true }, { setup: 'done' }, ['setup']);
    await eventually(
      async () => {
        const states = await agentStates(hub.url);
        return states[FUZZ_AGENT.id] === 'idle' && states[RAW_AGENT.id] === 'idle'
          ? true
          : undefined;
      },
      { what: 'both fuzz agents idle' },
    );

    const base = { redisClient, prefix };
    const snapshotBefore = await stableSnapshot(base);
    const rssBeforeMb = await settledRssMb(hub.pid);
    const heapBeforeMb = await heapUsedAfterGcMb(inspectorUrl(captured));
    ctx = {
      redis,
      redisClient,
      prefix,
      hub,
      hubOutput: () => captured,
      identities,
      fuzz,
      fuzzDisconnects,
      raw,
      completedTaskId: setupTask.id,
      rssBeforeMb,
      heapBeforeMb,
      snapshotBefore,
      healthMaxMs: 0,
    };
  }, 120_000);

  afterAll(async () => {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    if (ctx) {
      recordReliability({
        scenario: 'Hostile input',
        size: FULL ? 'full' : 'default',
        load: '1 hub replica (child process), 4 authenticated fuzz agents, HTTP + Socket.IO',
        faults: `${total} generated malformed inputs, seed ${SEED}`,
        inputs: summarizeCounts(counts),
        tasks: 2,
        lost: 0,
        duplicates: 0,
        measured: {
          ...measured,
          'wrong answers': String(wrongAnswers.total),
        },
      });
      ctx.fuzz.close();
      ctx.raw.close();
      ctx.redisClient.disconnect();
      await ctx.hub.kill('SIGKILL');
      await ctx.redis.dispose();
    }
  });

  /** Samples /healthz while `work` runs: the longest answer says how responsive the replica stayed. */
  async function withHealthProbe(phase: string, work: () => Promise<void>): Promise<void> {
    const c = need();
    let running = true;
    let longest = 0;
    const probe = (async () => {
      while (running) {
        const t0 = Date.now();
        await fetch(`${c.hub.url}/healthz`, { signal: AbortSignal.timeout(30_000) }).catch(
          () => undefined,
        );
        longest = Math.max(longest, Date.now() - t0);
        await new Promise((resolve) => setTimeout(resolve, 200)); // sampling period of the probe
      }
    })();
    try {
      await work();
    } finally {
      running = false;
      await probe;
      c.healthMaxMs = Math.max(c.healthMaxMs, longest);
      stalls[phase] = longest;
    }
  }

  /** What a phase starts from: the shared context, its own seeded generator, its failure log. */
  const phase = (salt: number): { c: Ctx; rng: Rng; failures: FailureLog } => ({
    c: need(),
    rng: new Rng(SEED ^ salt),
    failures: new FailureLog(wrongAnswers),
  });

  it(
    'socket events: every malformed payload on every client event is answered E_VALIDATION',
    async () => {
      const { c, rng, failures } = phase(0x50c1);
      const socket = loose(c.fuzz);
      const check = (category: string, what: string, ack: unknown): void => {
        count(category);
        const code = ackCode(ack);
        if (code !== 'E_VALIDATION') failures.add(`${category}: ${code}`, what);
      };
      const emit = async (event: string, args: unknown[]): Promise<unknown> =>
        socket
          .timeout(4000)
          .emitWithAck(event, ...args)
          .catch((err: unknown) => `no answer: ${(err as Error).message}`);

      await withHealthProbe('socket payloads', async () => {
        // 1. malformed payloads, per event
        const perEvent = 500 * SCALE;
        const jobs = CLIENT_EVENTS.flatMap((event) =>
          Array.from({ length: perEvent }, () => event),
        );
        await runPool(jobs, 64, async (event) => {
          const { payload, how } = malformedPayload(rng, event);
          check(`socket ${event}`, `${event} ${how}`, await emit(event, [payload]));
        });

        // 2. unknown event names (an agent has no cancel event, no create event, ...)
        await runPool(Array.from({ length: 400 * SCALE }), 64, async () => {
          const name = unknownEventName(rng);
          const payload = rng.chance(0.3) ? { taskId: 'a', token: 'b' } : hostileValue(rng, 2);
          check(
            'socket unknown events',
            `unknown event ${JSON.stringify(name).slice(0, 60)}`,
            await emit(name, [payload]),
          );
        });

        // 3. wrong arity: no payload, or extra arguments, with an ack
        await runPool(Array.from({ length: 160 * SCALE }), 32, async () => {
          const event = rng.pick(CLIENT_EVENTS);
          const valid = VALID_PAYLOAD[event](rng);
          const args = rng.pick<unknown[]>([
            [],
            [valid, 'extra'],
            [valid, {}, {}],
            [hostileValue(rng, 1), 1],
          ]);
          check(
            'socket wrong arity',
            `${event} with ${args.length} arguments`,
            await emit(event, args),
          );
        });

        // 4. events without an ack: dropped, even well-formed ones (Redis must show no effect)
        for (let i = 0; i < 400 * SCALE; i++) {
          const roll = rng.next();
          if (roll < 0.5) {
            const event = rng.pick(CLIENT_EVENTS);
            socket.emit(event, malformedPayload(rng, event).payload);
          } else if (roll < 0.8) {
            socket.emit(
              rng.pick(['agent:drain', 'agent:resume', 'agent:heartbeat', 'task:accept'] as const),
              rng.pick<unknown>([{}, { taskId: 'tx', token: 'ty' }]),
            );
          } else {
            socket.emit(unknownEventName(rng), hostileValue(rng, 1));
          }
          count('socket without ack');
        }
        // in-order delivery: once this is answered, every event above was processed
        check('socket without ack', 'ack after the no-ack events', await emit('task:accept', [{}]));
      });

      expect(c.fuzzDisconnects).toEqual([]);
      expect(failures.summary()).toEqual({});
    },
    PHASE_TIMEOUT_MS,
  );

  it(
    'socket events as raw text: 10,000-level nesting, duplicate keys, 1e400, lone surrogates, wrong arity',
    async () => {
      const { c, rng, failures } = phase(0x7a3);
      await withHealthProbe('socket raw frames', async () => {
        const jobs = [
          ...CLIENT_EVENTS.flatMap((event) => Array.from({ length: 50 * SCALE }, () => event)),
          ...Array.from({ length: 40 * SCALE }, () => undefined),
        ];
        await runPool(jobs, 16, async (event) => {
          const { text, how } = event ? rawArgsText(rng, event) : rawOddNameText(rng);
          const args = parserAccepts(text);
          if (!args || !refusedByHub(args) || Buffer.byteLength(text) > MAX_MESSAGE_BYTES - 64) {
            throw new Error(`generator bug: ${how} is not a refused, parseable frame`);
          }
          count('socket raw frames');
          const result = await c.raw.emit(text, 5000);
          const code =
            result.kind === 'ack'
              ? ackCode(result.args[0])
              : result.kind === 'closed'
                ? `connection closed (${result.code})`
                : 'no answer';
          if (code !== 'E_VALIDATION')
            failures.add(`raw ${event ?? 'odd name'} ${how}: ${code}`, text.slice(0, 200));
        });
      });
      expect(c.raw.isOpen).toBe(true);
      expect(failures.summary()).toEqual({});
    },
    PHASE_TIMEOUT_MS,
  );

  it(
    'handshake: every malformed auth object is refused with connect_error and a stable code',
    async () => {
      const { c, rng, failures } = phase(0x4a5);
      let refused = 0;
      const started = Date.now();
      const record = (how: string, expected: string, got: string, text: string): void => {
        count('handshakes');
        if (got !== expected) {
          const signature = `handshake ${how.split(' ')[0]}: expected ${expected}, got ${got}`;
          failures.add(signature, text.slice(0, 200));
        }
      };
      const describeResult = (result: RawConnectResult): string => {
        if (result.kind === 'refused') {
          const code = (result.data as { code?: unknown } | undefined)?.code;
          return isErrorCode(code)
            ? code
            : `refused without a stable code (${JSON.stringify(result.data)})`;
        }
        return result.kind;
      };

      await withHealthProbe('handshakes', async () => {
        const lanes = 4;
        const perLane = Math.ceil((400 * SCALE) / lanes);
        const cases = Array.from({ length: lanes * perLane }, () =>
          handshakeCase(rng, c.identities),
        );
        await Promise.all(
          Array.from({ length: lanes }, async (_, lane) => {
            let socket = await RawSocketIo.open(c.hub.url, { localAddress: HANDSHAKE_ADDRESS });
            for (let i = lane * perLane; i < (lane + 1) * perLane; i++) {
              const item = cases[i]!;
              if (!socket.isOpen)
                socket = await RawSocketIo.open(c.hub.url, { localAddress: HANDSHAKE_ADDRESS });
              const result = await socket.connect(item.text, 10_000);
              const got = describeResult(result);
              if (result.kind === 'refused') refused++;
              if (result.kind === 'connected') socket.close(); // a hole: the snapshot will show it too
              record(item.how, item.expect, got, item.text);
            }
            socket.close();
          }),
        );

        // the same through socket.io-client, as a sidecar sees it: connect_error with data.code
        for (let i = 0; i < 30 * SCALE; i++) {
          const item = handshakeCase(rng, c.identities);
          // 10,000 levels overflow socket.io-client's own encoder (in this process): raw only
          if (item.how.startsWith('deep')) continue;
          const auth = JSON.parse(item.text) as unknown;
          // the client re-encodes the auth object (1e400 becomes null): judge what it sends
          const expected = expectedHandshake(overTheWire(auth), c.identities);
          if (!isPlainObject(auth) || expected === 'closed' || expected === 'connects') continue;
          const options: Partial<ManagerOptions & SocketOptions> & { localAddress: string } = {
            forceNew: true,
            reconnection: false,
            transports: ['websocket'],
            auth,
            localAddress: HANDSHAKE_ADDRESS,
          };
          const client = io(`${c.hub.url}${AGENT_NAMESPACE}`, options);
          const got = await withTimeout(
            new Promise<string>((resolve) => {
              client.once('connect', () => resolve('connected'));
              client.once('connect_error', (err: Error & { data?: { code?: unknown } }) =>
                resolve(
                  isErrorCode(err.data?.code)
                    ? err.data.code
                    : `connect_error without data.code: ${err.message}`,
                ),
              );
            }),
            10_000,
            'socket.io-client handshake',
          ).catch((err: unknown) => `no answer: ${(err as Error).message}`);
          client.close();
          if (got !== 'connected' && !got.startsWith('no answer')) refused++;
          record(`client ${item.how}`, expected, got, item.text);
        }
      });

      // every refusal was counted against the address, cluster-wide (60 s window)
      const failuresCounted = Number(
        await c.redisClient.get(`{${c.prefix}}:auth-fail:${HANDSHAKE_ADDRESS}`),
      );
      measured['refused handshakes counted'] = `${failuresCounted}/${refused}`;
      if (Date.now() - started < 50_000) expect(failuresCounted).toBe(refused);
      expect(failures.summary()).toEqual({});
    },
    PHASE_TIMEOUT_MS,
  );

  it(
    'HTTP: malformed requests on every route get a 4xx with a stable code, never a 5xx',
    async () => {
      const { c, rng, failures } = phase(0x4777);
      const makers = httpCases(rng, c.completedTaskId);
      await withHealthProbe('http', async () => {
        await runPool(makers, 24, async (make) => {
          const item = make();
          count(`http ${item.route}`);
          const failure = judgeHttp(item, await sendHttp(c.hub.url, item));
          if (failure) {
            const example = `${item.method} ${item.path.slice(0, 120)} ${
              item.body === undefined
                ? ''
                : Buffer.from(item.body).subarray(0, 120).toString('utf8')
            }`;
            failures.add(`${item.route} ${item.kind}: ${failure}`, example);
          }
        });
      });
      expect(failures.summary()).toEqual({});
    },
    PHASE_TIMEOUT_MS,
  );

  it('junk frames and frames over 2 MiB from unauthenticated connections close only those connections', async () => {
    const { c, rng, failures } = phase(0x1c3);
    const junk: Array<[string, () => string | Buffer]> = [
      ['event before connect', () => '42/agent,1["task:accept",{"taskId":"a","token":"b"}]'],
      ['invalid json', () => '42/agent,1["task:accept",{]'],
      ['unknown packet type', () => '49/agent,'],
      ['empty packet', () => '4'],
      ['binary without header', () => randomBytesFrom(rng, rng.int(1, 64))],
      ['array auth', () => '40/agent,[]'],
      ['string auth', () => '40/agent,"x"'],
      ['bad json auth', () => '40/agent,{'],
      ['deep array auth', () => `40/agent,${nestedArraysText(10_000)}`],
      ['client connect_error packet', () => '44/agent,{}'],
      ['ack for nothing', () => '43/agent,1[]'],
      ['disconnect of nothing', () => '41/agent,'],
      ['reserved event', () => `42/agent,1[${q(rng.pick(RESERVED_EVENTS))},{}]`],
      ['text frame over 2 MiB', () => '4' + 'x'.repeat(MAX_MESSAGE_BYTES + rng.int(1, 64 * 1024))],
      ['binary frame over 2 MiB', () => Buffer.alloc(MAX_MESSAGE_BYTES + rng.int(1, 1024))],
      [
        'event frame over 2 MiB',
        () => `42/agent,1["task:log",{"lines":["${'x'.repeat(MAX_MESSAGE_BYTES)}"]}]`,
      ],
    ];
    const jobs = junk.flatMap((entry) => Array.from({ length: 8 * SCALE }, () => entry));
    await withHealthProbe('unauthenticated junk', async () => {
      await runPool(jobs, 8, async ([how, make]) => {
        count('unauthenticated junk frames');
        const socket = await RawSocketIo.open(c.hub.url, { localAddress: JUNK_ADDRESS });
        await expectClosedAfter(socket, make(), `junk ${how}`, failures);
      });
    });
    expect(c.fuzz.socket.connected).toBe(true);
    expect(c.raw.isOpen).toBe(true);
    expect(failures.summary()).toEqual({});
  }, 180_000);

  it('after the barrage Redis holds exactly what it held before (every exclusion listed)', async () => {
    const c = need();
    console.log(`hostile input: snapshot exclusions:\n  ${EXCLUSIONS.join('\n  ')}`);
    const after = await snapshot(c);
    const changes = diffSnapshots(c.snapshotBefore, after);
    measured['Redis keys compared'] = String(c.snapshotBefore.size);
    measured['Redis keys changed'] = String(changes.length);
    expect(changes).toEqual([]);
  }, 60_000);

  it('a socket message over 2 MiB, junk packets and reserved event names close that connection only; other agents are unaffected', async () => {
    const { c, rng, failures } = phase(0xc105e);
    const auth = authText(CLOSING_AGENT, c.identities);
    const closing: Array<[string, () => string | Buffer]> = [
      [
        'event over 2 MiB',
        () =>
          `42/agent,1["task:log",{"taskId":"a","token":"b","lines":["${'x'.repeat(MAX_MESSAGE_BYTES)}"]}]`,
      ],
      ['text frame over 2 MiB', () => '4' + 'y'.repeat(MAX_MESSAGE_BYTES + rng.int(1, 64 * 1024))],
      ['binary frame over 2 MiB', () => Buffer.alloc(MAX_MESSAGE_BYTES + 1)],
      ['invalid json', () => '42/agent,5["task:accept",{]'],
      ['non-array event', () => '42/agent,5{"taskId":"a"}'],
      ['empty event array', () => '42/agent,5[]'],
      ['null event name', () => '42/agent,5[null,{}]'],
      ['object event name', () => '42/agent,5[{},{}]'],
      ['string event data', () => '42/agent,5"task:accept"'],
      ['reserved event', () => `42/agent,5[${q(rng.pick(RESERVED_EVENTS))},{}]`],
      ['binary junk', () => randomBytesFrom(rng, rng.int(1, 256))],
      ['binary event', () => '451-/agent,5["task:log",{"_placeholder":true,"num":0}]'],
      ['binary ack', () => '461-/agent,5[{"_placeholder":true,"num":0}]'],
      ['unknown packet type', () => '47/agent,'],
    ];
    const fuzzAlive = async (): Promise<boolean> =>
      ackCode(
        await loose(c.fuzz)
          .timeout(5000)
          .emitWithAck('agent:heartbeat', { bad: true })
          .catch(() => undefined),
      ) === 'E_VALIDATION';
    const rawAlive = async (): Promise<boolean> => {
      const result = await c.raw.emit('["agent:heartbeat",{"bad":true}]', 5000);
      return result.kind === 'ack' && ackCode(result.args[0]) === 'E_VALIDATION';
    };

    for (const [how, make] of closing) {
      for (let i = 0; i < 3 * SCALE; i++) {
        count('connection-closing inputs');
        const socket = await RawSocketIo.open(c.hub.url);
        const connected = await socket.connect(auth);
        if (connected.kind !== 'connected') {
          failures.add(`${how}: closing agent could not connect (${connected.kind})`, how);
          continue;
        }
        await expectClosedAfter(socket, make(), `closing ${how}`, failures);
      }
      if (!(await fuzzAlive())) failures.add(`after ${how}: the fuzz agent no longer answers`, how);
      if (!(await rawAlive())) failures.add(`after ${how}: the raw agent no longer answers`, how);
    }

    // the same through socket.io-client: a sidecar that sends more than 2 MiB is disconnected
    for (let i = 0; i < 2; i++) {
      count('connection-closing inputs');
      const big = fuzzAgent(c.hub.url, CLOSING_AGENT, c.identities);
      await big.connect();
      const disconnected = new Promise<string>((resolve) =>
        big.socket.once('disconnect', (reason) => resolve(reason)),
      );
      loose(big).emit('task:complete', {
        taskId: 'a',
        token: 'b',
        result: 'z'.repeat(MAX_MESSAGE_BYTES + 1024),
      });
      const reason = await withTimeout(
        disconnected,
        10_000,
        'disconnect after a message over 2 MiB',
      ).catch((err: unknown) => `still connected: ${(err as Error).message}`);
      if (reason.startsWith('still connected'))
        failures.add('socket.io-client message over 2 MiB: still connected', reason);
      big.close();
    }

    expect(c.hub.running).toBe(true);
    expect(c.fuzzDisconnects).toEqual([]);
    expect(c.raw.isOpen).toBe(true);
    const states = await agentStates(c.hub.url);
    expect(states[FUZZ_AGENT.id]).toBe('idle');
    expect(states[RAW_AGENT.id]).toBe('idle');
    expect(failures.summary()).toEqual({});
  }, 180_000);

  it('afterwards the replica serves: a real task runs end to end, memory is back near its baseline', async () => {
    const c = need();
    expect(c.hub.running).toBe(true);
    expect((await fetch(`${c.hub.url}/readyz`)).status).toBe(200);

    const done = await runTask(c.hub.url, c.fuzz, { after: 'the barrage' }, { survived: true });
    expect(done).toMatchObject({
      state: 'completed',
      result: { survived: true },
      agentId: FUZZ_AGENT.id,
    });
    const heartbeat = await c.raw.emit('["agent:heartbeat",{}]', 5000);
    expect(heartbeat).toMatchObject({ kind: 'ack', args: [{ ok: true, state: 'idle' }] });

    const rssRightAfterMb = rssMb(c.hub.pid);
    // the full collections first: they also hand back to the OS what the settle wait waits for
    const heapAfterMb = await heapUsedAfterGcMb(inspectorUrl(c.hubOutput()));
    const settle = await rssBackNear(c.hub.pid, c.rssBeforeMb + RSS_SETTLED_MB);
    const rssAfterMb = settle.rssMb;
    measured['heap in use after full GC, before / after'] =
      `${c.heapBeforeMb.toFixed(1)} / ${heapAfterMb.toFixed(1)} MB`;
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    measured['RSS before'] = `${c.rssBeforeMb.toFixed(1)} MB`;
    measured['RSS right after'] = `${rssRightAfterMb.toFixed(1)} MB`;
    measured['RSS after settling'] =
      `${rssAfterMb.toFixed(1)} MB after ${Math.round(settle.waitedMs / 1000)} s`;
    measured['longest /healthz during the barrage'] = `${c.healthMaxMs} ms`;
    measured['inputs'] = String(total);
    const errorLines = c
      .hubOutput()
      .split('\n')
      .filter((line) => /"level":(50|60)/.test(line));
    measured['hub error log lines'] = String(errorLines.length);
    console.log(
      `hostile input: ${total} inputs (${JSON.stringify(counts)}); RSS ${c.rssBeforeMb.toFixed(1)} MB before, ` +
        `${rssRightAfterMb.toFixed(1)} MB right after, ${rssAfterMb.toFixed(1)} MB after ${Math.round(settle.waitedMs / 1000)} s; ` +
        `heap after full GC ${c.heapBeforeMb.toFixed(1)} MB before, ${heapAfterMb.toFixed(1)} MB after; ` +
        `longest /healthz ${c.healthMaxMs} ms (${JSON.stringify(stalls)}); hub error lines ${errorLines.length}`,
    );
    expect(total).toBeGreaterThanOrEqual(10_000);
    expect(heapAfterMb).toBeLessThanOrEqual(c.heapBeforeMb + HEAP_BOUND_MB);
    expect(rssAfterMb).toBeLessThanOrEqual(c.rssBeforeMb + RSS_BOUND_MB);
    expect(errorLines.slice(0, 5)).toEqual([]);
  }, 200_000);
});

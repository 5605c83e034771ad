import { readFile, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { MAX_PAYLOAD_BYTES, createTaskBodySchema, type CreateTaskBody } from '@agentcom/shared';
import { errorText } from '../error-text';
import { InterruptedError, UsageError } from './errors';
import { oneLine } from './format';

/** The flags of `agentcom task add` as commander parsed them: strings, not yet checked. */
export interface TaskAddFlags {
  queue: string;
  payload: string;
  priority?: string;
  delayMs?: string;
  attempts?: string;
  backoff?: string;
  timeoutMs?: string;
  idempotencyKey?: string;
  label: string[];
  wait?: boolean;
  waitTimeoutS?: string;
  quiet?: boolean;
}

/** The option of each body field, so a validation issue names what the user typed. */
const OPTION_OF_FIELD: Record<string, string> = {
  queue: '--queue',
  payload: '--payload',
  priority: '--priority',
  delayMs: '--delay-ms',
  attempts: '--attempts',
  backoff: '--backoff',
  timeoutMs: '--timeout-ms',
  idempotencyKey: '--idempotency-key',
  labels: '--label',
};

/**
 * Builds and checks the `POST /v1/tasks` body from the flags (the payload from `@file`, `-` for
 * stdin, or JSON text). Throws {@link UsageError} naming the option (exit 2).
 */
export async function taskBodyFromFlags(
  flags: TaskAddFlags,
  stdin: Readable,
  interrupted: AbortSignal,
): Promise<CreateTaskBody> {
  const body: CreateTaskBody = {
    queue: flags.queue,
    payload: await readPayload(flags.payload, stdin, interrupted),
  };
  const priority = wholeNumber(flags.priority, '--priority');
  if (priority !== undefined) body.priority = priority;
  const delayMs = wholeNumber(flags.delayMs, '--delay-ms');
  if (delayMs !== undefined) body.delayMs = delayMs;
  const attempts = wholeNumber(flags.attempts, '--attempts');
  if (attempts !== undefined) body.attempts = attempts;
  const timeoutMs = wholeNumber(flags.timeoutMs, '--timeout-ms');
  if (timeoutMs !== undefined) body.timeoutMs = timeoutMs;
  if (flags.backoff !== undefined) body.backoff = parseBackoff(flags.backoff);
  if (flags.idempotencyKey !== undefined) body.idempotencyKey = flags.idempotencyKey;
  if (flags.label.length > 0) body.labels = parseLabels(flags.label);

  const checked = createTaskBodySchema.safeParse(body);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const field = issue?.path[0];
    const option = (typeof field === 'string' && OPTION_OF_FIELD[field]) || 'task';
    const rest = issue?.path.slice(1).map(String).join('.');
    throw new UsageError(
      option,
      oneLine(`${rest ? `${rest}: ` : ''}${issue?.message ?? 'is not valid'}`),
    );
  }
  return body;
}

/** `@file.json` (or `@-`), `-` (stdin), or JSON text. */
export async function readPayload(
  spec: string,
  stdin: Readable,
  interrupted: AbortSignal,
): Promise<unknown> {
  let text: string;
  let source: string;
  if (spec === '-' || spec === '@-') {
    source = 'stdin';
    text = await readAll(stdin, interrupted);
  } else if (spec.startsWith('@')) {
    const path = spec.slice(1);
    if (path === '') throw new UsageError('--payload', '@ needs a file name: @payload.json');
    source = path;
    try {
      const { size } = await stat(path);
      if (size > MAX_PAYLOAD_TEXT_BYTES) {
        throw new UsageError('--payload', `${path}: more than ${MAX_PAYLOAD_TEXT_BYTES} bytes`);
      }
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (err instanceof UsageError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      const reason = typeof code === 'string' ? code : oneLine(errorText(err));
      throw new UsageError('--payload', `cannot read ${path} (${reason})`);
    }
  } else {
    source = '';
    text = spec;
  }
  try {
    // A byte order mark, as Windows editors and PowerShell write, is not JSON: skipped.
    return JSON.parse(text.replace(/^\uFEFF/, '')) as unknown;
  } catch (err) {
    const reason = oneLine(err instanceof Error ? err.message : String(err));
    const where = source === '' ? '' : `${source}: `;
    const hint =
      source === '' ? ` (JSON text, @file.json or - for stdin; a string is quoted: '"text"')` : '';
    throw new UsageError('--payload', `${where}not valid JSON: ${reason}${hint}`);
  }
}

/**
 * `--label key=value`, repeatable; the value may hold `=`. A key given twice is refused, as the
 * sidecar's `--label` does, and so is `__proto__` (an object cannot hold it as its own key: it
 * would vanish from the request).
 */
export function parseLabels(specs: readonly string[]): Record<string, string> {
  const labels = new Map<string, string>();
  for (const spec of specs) {
    const at = spec.indexOf('=');
    if (at <= 0) throw new UsageError('--label', `${spec}: must be key=value`);
    const key = spec.slice(0, at);
    if (key === '__proto__') throw new UsageError('--label', 'the label key __proto__ is reserved');
    if (labels.has(key)) {
      throw new UsageError('--label', `the label "${key}" is given twice: give each key once`);
    }
    labels.set(key, spec.slice(at + 1));
  }
  return Object.fromEntries(labels);
}

/** `--backoff fixed:MS` or `exponential:MS`. */
function parseBackoff(spec: string): { type: 'fixed' | 'exponential'; delayMs: number } {
  const match = /^(fixed|exponential):(\d+)$/.exec(spec);
  if (!match) throw new UsageError('--backoff', `${spec}: must be fixed:MS or exponential:MS`);
  return { type: match[1] as 'fixed' | 'exponential', delayMs: Number(match[2]) };
}

/** A whole number flag (`--priority 5`); undefined when not given. */
export function wholeNumber(value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(Number(value.trim()))) {
    throw new UsageError(option, `must be a whole number, not ${JSON.stringify(value)}`);
  }
  return Number(value.trim());
}

/** A positive number of seconds (`--wait-timeout-s 1.5`); undefined when not given. */
export function positiveSeconds(
  value: string | undefined,
  option: string,
  max = 7 * 24 * 3600,
): number | undefined {
  if (value === undefined) return undefined;
  const seconds = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!(seconds > 0) || seconds > max) {
    throw new UsageError(option, `must be a number of seconds above 0 and at most ${max}`);
  }
  return seconds;
}

/**
 * The most payload text read: the limit is on the payload as compact JSON, so an indented file
 * may be larger; far beyond it, the hub refuses it anyway.
 */
const MAX_PAYLOAD_TEXT_BYTES = 8 * MAX_PAYLOAD_BYTES;

/** All of a stream (stdin for `--payload -`), as UTF-8 text, bounded; Ctrl-C stops the read. */
async function readAll(stream: Readable, interrupted: AbortSignal): Promise<string> {
  if (interrupted.aborted) throw new InterruptedError();
  const onInterrupt = (): void => {
    stream.destroy(new InterruptedError());
  };
  interrupted.addEventListener('abort', onInterrupt, { once: true });
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      size += buffer.length;
      if (size > MAX_PAYLOAD_TEXT_BYTES) {
        throw new UsageError('--payload', `stdin: more than ${MAX_PAYLOAD_TEXT_BYTES} bytes`);
      }
      chunks.push(buffer);
    }
  } finally {
    interrupted.removeEventListener('abort', onInterrupt);
  }
  return Buffer.concat(chunks).toString('utf8');
}

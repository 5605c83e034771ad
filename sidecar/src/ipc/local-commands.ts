import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { ZodType } from 'zod';
import { boundedJsonSchema, taskIdSchema } from '@agentcom/shared';
import { isConfigError } from '../config-error';
import { resolveLocalTarget, type LocalFlags } from '../config';
import { errorText } from '../error-text';
import { LOCAL_EXIT_CODES, type LocalExitCode } from '../exit-codes';
import { SidecarUnreachableError, ipcRequest } from './ipc-client';
import {
  MAX_RETRY_AFTER_SECONDS,
  runIdSchema,
  type IpcErrorCode,
  type IpcRequest,
  type IpcResponse,
  type SidecarStatus,
} from './ipc-protocol';

/**
 * The local commands: `status`, `done` and `fail` talk to the running sidecar over its IPC
 * socket. Each returns its exit code (see {@link LOCAL_EXIT_CODES}) and writes one line on stderr
 * when something went wrong.
 */

export interface LocalIo {
  stdin: Readable;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface StatusFlags extends LocalFlags {
  json?: boolean;
}

export interface DoneFlags extends LocalFlags {
  result?: string;
  task?: string;
  run?: string;
}

export interface FailFlags extends LocalFlags {
  reason: string;
  retryAfter?: string;
  /** `--no-retry` sets it to false. */
  retry?: boolean;
  task?: string;
  run?: string;
}

/** `status` answers fast; `done` / `fail` wait for the report to be stored (bounded by the sidecar). */
const STATUS_TIMEOUT_MS = 10_000;
const REPORT_TIMEOUT_MS = 60_000;

class UsageError extends Error {}

export async function statusCommand(flags: StatusFlags, io: LocalIo): Promise<LocalExitCode> {
  return talk(
    flags,
    io,
    async () => ({ type: 'status' }),
    STATUS_TIMEOUT_MS,
    (response) => {
      if (!('status' in response)) return;
      io.stdout.write(
        flags.json === true
          ? `${JSON.stringify(response.status)}\n`
          : formatStatus(response.status),
      );
    },
  );
}

export async function doneCommand(flags: DoneFlags, io: LocalIo): Promise<LocalExitCode> {
  return talk(
    flags,
    io,
    async () => {
      const taskId = checkIdFlag(flags.task, taskIdSchema, '--task');
      const run = checkIdFlag(flags.run, runIdSchema, '--run');
      const result = await readResult(flags.result, io.stdin);
      return {
        type: 'done',
        ...(taskId !== undefined && { taskId }),
        ...(run !== undefined && { run }),
        ...(result !== undefined && { result }),
      };
    },
    REPORT_TIMEOUT_MS,
    (response) => {
      if ('taskId' in response) io.stdout.write(`task ${response.taskId}: done\n`);
    },
  );
}

export async function failCommand(flags: FailFlags, io: LocalIo): Promise<LocalExitCode> {
  return talk(
    flags,
    io,
    async () => {
      const taskId = checkIdFlag(flags.task, taskIdSchema, '--task');
      const run = checkIdFlag(flags.run, runIdSchema, '--run');
      if (flags.reason.trim() === '') throw new UsageError('--reason: must not be empty');
      if (flags.reason.length > 64 * 1024) throw new UsageError('--reason: at most 64 KiB');
      const retryable = flags.retry !== false;
      const retryAfterSeconds = parseRetryAfter(flags.retryAfter);
      if (retryAfterSeconds !== undefined && !retryable) {
        throw new UsageError(
          '--retry-after and --no-retry contradict each other: a rate-limited task is requeued',
        );
      }
      return {
        type: 'fail',
        reason: flags.reason,
        retryable,
        ...(taskId !== undefined && { taskId }),
        ...(run !== undefined && { run }),
        ...(retryAfterSeconds !== undefined && { retryAfterSeconds }),
      };
    },
    REPORT_TIMEOUT_MS,
    (response) => {
      if ('taskId' in response) io.stdout.write(`task ${response.taskId}: failed\n`);
    },
  );
}

/** Resolves the socket, builds the request, sends it, maps the answer to an exit code. */
async function talk(
  flags: LocalFlags,
  io: LocalIo,
  build: () => Promise<IpcRequest>,
  timeoutMs: number,
  onOk: (response: Extract<IpcResponse, { ok: true }>) => void,
): Promise<LocalExitCode> {
  const fail = (code: LocalExitCode, message: string): LocalExitCode => {
    io.stderr.write(`agentcom-sidecar: ${message}\n`);
    return code;
  };
  let socketPath: string;
  let request: IpcRequest;
  try {
    socketPath = resolveLocalTarget(flags).socketPath;
    request = await build();
  } catch (err) {
    if (isConfigError(err) || err instanceof UsageError) {
      return fail(LOCAL_EXIT_CODES.USAGE, err.message);
    }
    throw err;
  }
  let response: IpcResponse;
  try {
    response = await ipcRequest(socketPath, request, timeoutMs);
  } catch (err) {
    if (err instanceof SidecarUnreachableError)
      return fail(LOCAL_EXIT_CODES.NOT_RUNNING, err.message);
    return fail(LOCAL_EXIT_CODES.REFUSED, errorText(err));
  }
  if (!response.ok) return fail(exitCodeOf(response.code), response.message);
  onOk(response);
  return LOCAL_EXIT_CODES.OK;
}

function exitCodeOf(code: IpcErrorCode): LocalExitCode {
  return code === 'E_BAD_REQUEST' ? LOCAL_EXIT_CODES.USAGE : LOCAL_EXIT_CODES.REFUSED;
}

/** An optional id flag, checked with `schema` before anything is sent (`--task`, `--run`). */
function checkIdFlag(
  value: string | undefined,
  schema: ZodType<string>,
  flag: string,
): string | undefined {
  if (value === undefined) return undefined;
  const checked = schema.safeParse(value);
  if (!checked.success) {
    throw new UsageError(`${flag}: ${checked.error.issues[0]?.message ?? 'not valid'}`);
  }
  return checked.data;
}

/** `--result FILE` or `-` (stdin), parsed as JSON; no `--result` means no result (`null`). */
async function readResult(source: string | undefined, stdin: Readable): Promise<unknown> {
  if (source === undefined) return undefined;
  const where = source === '-' ? 'stdin' : source;
  let text: string;
  try {
    text = source === '-' ? await readAll(stdin) : await readFile(source, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? errorText(err);
    throw new UsageError(`--result: cannot read ${where} (${code})`);
  }
  if (text.trim() === '') throw new UsageError(`--result: ${where} is empty (expected JSON)`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--result: ${where} is not valid JSON (${errorText(err)})`);
  }
  const checked = boundedJsonSchema.safeParse(value);
  if (!checked.success) {
    throw new UsageError(`--result: ${checked.error.issues[0]?.message ?? 'not acceptable'}`);
  }
  return value;
}

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseRetryAfter(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const seconds = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : Number.NaN;
  if (!(seconds > 0 && seconds <= MAX_RETRY_AFTER_SECONDS)) {
    throw new UsageError(
      `--retry-after: must be a number of seconds above 0 and at most ${MAX_RETRY_AFTER_SECONDS}`,
    );
  }
  return seconds;
}

/** `status` for humans: one `name  value` line per fact. */
export function formatStatus(status: SidecarStatus): string {
  const hub =
    status.connection === 'connected'
      ? `connected to ${status.hubUrl} for ${duration(status.connectionAgeSec)}`
      : `${status.connection} (${status.hubUrl}) for ${duration(status.connectionAgeSec)}`;
  const lines: Array<[string, string]> = [
    ['agent', `${status.agentId} (${status.mode} mode)${status.draining ? ', draining' : ''}`],
    ['connection', hub],
    ['hub replica', status.hubReplica ?? 'unknown'],
    [
      'agent state',
      status.agentState === null
        ? 'unknown (no heartbeat answered yet)'
        : `${status.agentState} (as of ${duration(status.agentStateAgeSec ?? 0)} ago)`,
    ],
    [
      'task',
      status.task === null
        ? 'none'
        : `${status.task.id} (attempt ${status.task.attempt}) for ${duration(status.task.ageSec)}`,
    ],
    ['outbox', `${status.outbox} report${status.outbox === 1 ? '' : 's'} waiting for the hub`],
    ['sidecar', `pid ${status.pid}, up ${duration(status.uptimeSec)}, version ${status.version}`],
    ['state dir', status.stateDir],
  ];
  const width = Math.max(...lines.map(([name]) => name.length));
  return lines.map(([name, value]) => `${name.padEnd(width)}  ${value}\n`).join('');
}

function duration(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

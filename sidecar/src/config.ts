import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { z } from 'zod';
import { agentIdSchema, handshakeAuthSchema, queueNameSchema } from '@agentcom/shared';
import { ConfigError } from './config-error';
import { SplitCommandError, splitCommand } from './split-command';

/**
 * The sidecar's configuration: flags first, then environment variables, then defaults. This file
 * is the only reader of `process.env`; everything else receives the frozen {@link SidecarConfig}.
 */

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How tasks are run. Only `exec` exists today; `wake` will join it as another variant. */
export interface ExecRunnerConfig {
  readonly kind: 'exec';
  /** `--exec` split into argv (see {@link splitCommand}); `argv[0]` was found executable at start. */
  readonly argv: readonly string[];
}

export interface SidecarConfig {
  /** `--hub` / `AGENTCOM_HUB`: hub URLs (comma-separated), tried in order, rotating on failure. Required. */
  readonly hubUrls: readonly string[];
  /** `--agent` / `AGENTCOM_AGENT`: this agent's id. Required. */
  readonly agentId: string;
  /** From `--token-file` / `AGENTCOM_TOKEN_FILE` (trimmed), else `AGENTCOM_TOKEN`. Required. Never logged. */
  readonly token: string;
  /** `--queue` (repeatable, or comma-separated) / `AGENTCOM_QUEUES`: the queues served. Required. */
  readonly queues: readonly string[];
  readonly runner: ExecRunnerConfig;
  /** `--state-dir` / `AGENTCOM_STATE_DIR`. Default `$XDG_STATE_HOME/agentcom/<agentId>` (`~/.local/state/...`). */
  readonly stateDir: string;
  /** `--heartbeat-ms` / `AGENTCOM_HEARTBEAT_MS`: heartbeat period. Default 5000. */
  readonly heartbeatMs: number;
  /** `--drain-grace-ms` / `AGENTCOM_DRAIN_GRACE_MS`: how long SIGTERM waits for the running task. Default 30000. */
  readonly drainGraceMs: number;
  /** `--kill-grace-ms` / `AGENTCOM_KILL_GRACE_MS`: SIGTERM → SIGKILL delay for a task's process group. Default 5000. */
  readonly killGraceMs: number;
  /** `--ack-timeout-ms` / `AGENTCOM_ACK_TIMEOUT_MS`: how long an event waits for the hub's ack. Default 10000. */
  readonly ackTimeoutMs: number;
  /** `--failover-attempts` / `AGENTCOM_FAILOVER_ATTEMPTS`: reconnect attempts on one URL before the next (several URLs only). Default 3. */
  readonly failoverAttempts: number;
  /** `--log-level` / `LOG_LEVEL`. Default `info`. */
  readonly logLevel: LogLevel;
  /** The environment handed to task processes: this process's, minus `AGENTCOM_TOKEN` and `AGENTCOM_TOKEN_FILE`. */
  readonly childEnv: Readonly<Record<string, string>>;
}

/** The flags of `agentcom-sidecar run` as the CLI parsed them: strings, not yet validated. */
export interface RunFlags {
  hub?: string;
  agent?: string;
  tokenFile?: string;
  queue?: string[];
  exec?: string;
  stateDir?: string;
  heartbeatMs?: string;
  drainGraceMs?: string;
  killGraceMs?: string;
  ackTimeoutMs?: string;
  failoverAttempts?: string;
  logLevel?: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Each setting with the flag and variable that set it: error messages name both. */
const SOURCES = {
  hubUrls: { flag: '--hub', env: 'AGENTCOM_HUB' },
  agentId: { flag: '--agent', env: 'AGENTCOM_AGENT' },
  tokenFile: { flag: '--token-file', env: 'AGENTCOM_TOKEN_FILE' },
  token: { flag: '--token-file', env: 'AGENTCOM_TOKEN' },
  queues: { flag: '--queue', env: 'AGENTCOM_QUEUES' },
  exec: { flag: '--exec', env: 'AGENTCOM_EXEC' },
  stateDir: { flag: '--state-dir', env: 'AGENTCOM_STATE_DIR' },
  heartbeatMs: { flag: '--heartbeat-ms', env: 'AGENTCOM_HEARTBEAT_MS' },
  drainGraceMs: { flag: '--drain-grace-ms', env: 'AGENTCOM_DRAIN_GRACE_MS' },
  killGraceMs: { flag: '--kill-grace-ms', env: 'AGENTCOM_KILL_GRACE_MS' },
  ackTimeoutMs: { flag: '--ack-timeout-ms', env: 'AGENTCOM_ACK_TIMEOUT_MS' },
  failoverAttempts: { flag: '--failover-attempts', env: 'AGENTCOM_FAILOVER_ATTEMPTS' },
  logLevel: { flag: '--log-level', env: 'LOG_LEVEL' },
} as const;
type Setting = keyof typeof SOURCES;

function optionName(setting: Setting): string {
  const { flag, env } = SOURCES[setting];
  return `${flag} (${env})`;
}

const hubUrlSchema = z.string().refine((value) => {
  try {
    return ['http:', 'https:', 'ws:', 'wss:'].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}, 'must be an http(s):// or ws(s):// URL');

function integerSchema(min: number, max: number) {
  return z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
}

/** Validates the assembled strings; keys are {@link Setting}s so an issue maps to its option. */
const settingsSchema = z
  .object({
    hubUrls: z.array(hubUrlSchema).min(1, 'needs at least one URL'),
    agentId: agentIdSchema,
    token: handshakeAuthSchema.shape.token,
    queues: z.array(queueNameSchema).min(1, 'needs at least one queue').max(32),
    stateDir: z.string().min(1),
    heartbeatMs: integerSchema(50, 600_000),
    drainGraceMs: integerSchema(0, 86_400_000),
    killGraceMs: integerSchema(0, 600_000),
    ackTimeoutMs: integerSchema(100, 600_000),
    failoverAttempts: integerSchema(1, 1000),
    logLevel: z.enum(LOG_LEVELS),
  })
  .strict();

/**
 * Builds the frozen config from the parsed flags and the environment. Throws {@link ConfigError}
 * naming the first bad or missing option. Reads the token file and checks that the `--exec`
 * command exists, so a broken setup fails at start rather than on the first task.
 */
export function loadRunConfig(flags: RunFlags, env: Env = process.env): SidecarConfig {
  const pick = (flag: string | undefined, setting: Setting): string | undefined =>
    nonEmpty(flag) ?? nonEmpty(env[SOURCES[setting].env]);

  const hub = required(pick(flags.hub, 'hubUrls'), 'hubUrls');
  const agentId = required(pick(flags.agent, 'agentId'), 'agentId');
  const queueText =
    flags.queue !== undefined && flags.queue.length > 0
      ? flags.queue.join(',')
      : env.AGENTCOM_QUEUES;
  const queues = unique(splitList(required(nonEmpty(queueText), 'queues')));
  const argv = parseExec(required(pick(flags.exec, 'exec'), 'exec'), env);
  const token = readToken(flags.tokenFile, env);

  const parsed = settingsSchema.safeParse({
    hubUrls: unique(splitList(hub)),
    agentId,
    token,
    queues,
    stateDir: pick(flags.stateDir, 'stateDir') ?? defaultStateDir(agentId, env),
    heartbeatMs: pick(flags.heartbeatMs, 'heartbeatMs') ?? '5000',
    drainGraceMs: pick(flags.drainGraceMs, 'drainGraceMs') ?? '30000',
    killGraceMs: pick(flags.killGraceMs, 'killGraceMs') ?? '5000',
    ackTimeoutMs: pick(flags.ackTimeoutMs, 'ackTimeoutMs') ?? '10000',
    failoverAttempts: pick(flags.failoverAttempts, 'failoverAttempts') ?? '3',
    logLevel: pick(flags.logLevel, 'logLevel') ?? 'info',
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const setting = (issue?.path[0] ?? 'hubUrls') as Setting;
    const where =
      issue !== undefined && issue.path.length > 1 ? ` (item ${String(issue.path[1])})` : '';
    throw new ConfigError(optionName(setting), `${issue?.message ?? 'is not valid'}${where}`);
  }

  return deepFreeze({
    ...parsed.data,
    runner: { kind: 'exec' as const, argv },
    childEnv: childEnvironment(env),
  });
}

function required(value: string | undefined, setting: Setting): string {
  if (value === undefined) throw new ConfigError(optionName(setting), 'is required');
  return value;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

function unique(items: string[]): string[] {
  return [...new Set(items)];
}

function readToken(flagPath: string | undefined, env: Env): string {
  const path = nonEmpty(flagPath) ?? nonEmpty(env.AGENTCOM_TOKEN_FILE);
  if (path === undefined) {
    const token = nonEmpty(env.AGENTCOM_TOKEN)?.trim();
    if (token === undefined) {
      throw new ConfigError('--token-file (AGENTCOM_TOKEN_FILE or AGENTCOM_TOKEN)', 'is required');
    }
    return token;
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(optionName('tokenFile'), `cannot read ${path} (${code})`);
  }
  const token = text.trim();
  if (token === '') throw new ConfigError(optionName('tokenFile'), `${path} is empty`);
  return token;
}

function parseExec(line: string, env: Env): string[] {
  let argv: string[];
  try {
    argv = splitCommand(line);
  } catch (err) {
    if (err instanceof SplitCommandError) throw new ConfigError(optionName('exec'), err.message);
    throw err;
  }
  const command = argv[0];
  if (command === undefined || command === '') {
    throw new ConfigError(optionName('exec'), 'names no command');
  }
  if (!isExecutableCommand(command, env)) {
    const where = command.includes('/') ? 'is not an executable file' : 'was not found on PATH';
    throw new ConfigError(optionName('exec'), `command "${command}" ${where}`);
  }
  return argv;
}

/** Whether `command` is an executable file: as a path when it holds a `/`, else on `PATH`. */
function isExecutableCommand(command: string, env: Env): boolean {
  const candidates = command.includes('/')
    ? [command]
    : (env.PATH ?? '')
        .split(delimiter)
        .filter((dir) => dir !== '')
        .map((dir) => join(dir, command));
  return candidates.some((candidate) => {
    try {
      accessSync(candidate, fsConstants.X_OK);
      return statSync(candidate).isFile();
    } catch {
      return false;
    }
  });
}

function defaultStateDir(agentId: string, env: Env): string {
  const base =
    nonEmpty(env.XDG_STATE_HOME) ?? join(nonEmpty(env.HOME) ?? homedir(), '.local', 'state');
  // One directory per agent id: two sidecars on one machine never share an outbox.
  return join(base, 'agentcom', agentId);
}

function childEnvironment(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined || key === 'AGENTCOM_TOKEN' || key === 'AGENTCOM_TOKEN_FILE') continue;
    out[key] = value;
  }
  return out;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

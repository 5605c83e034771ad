import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { z } from 'zod';
import {
  agentIdSchema,
  handshakeAuthSchema,
  labelsSchema,
  queueNameSchema,
} from '@agentcom/shared';
import { ConfigError } from './config-error';
import { readConfigFile, type ConfigFile } from './config-file';
import { Layers, nonEmpty, type Env, type Setting } from './config-layers';
import { taskEnvironment } from './runner/task-environment';
import { SplitCommandError, splitCommand } from './split-command';

/**
 * The sidecar's configuration: flags first, then environment variables, then the config file
 * (see config-file.ts), then defaults. This file is the only reader of `process.env`; everything
 * else receives the frozen {@link SidecarConfig}.
 */

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `exec` mode: one process per task, the task on its stdin. */
export interface ExecRunnerConfig {
  readonly kind: 'exec';
  /** `--exec` split into argv (see {@link splitCommand}); `argv[0]` was found executable at start. */
  readonly argv: readonly string[];
}

/** `wake` mode: write the task to `current.json`, run the wake command, wait for `done` / `fail`. */
export interface WakeRunnerConfig {
  readonly kind: 'wake';
  /** `--wake` split into argv; `argv[0]` was found executable at start. */
  readonly argv: readonly string[];
}

export type RunnerConfig = ExecRunnerConfig | WakeRunnerConfig;

export interface SidecarConfig {
  /** `--hub` / `AGENTCOM_HUB` / `hub`: hub URLs (comma-separated): the first, then on failure each in a random cycle of this sidecar's own. Required. */
  readonly hubUrls: readonly string[];
  /** `--agent` / `AGENTCOM_AGENT` / `agent`: this agent's id. Required. */
  readonly agentId: string;
  /** From `--token-file` / `AGENTCOM_TOKEN_FILE` (trimmed), else `AGENTCOM_TOKEN`, else `tokenFile`. Required. Never logged. */
  readonly token: string;
  /** `--queue` (repeatable, or comma-separated) / `AGENTCOM_QUEUES` / `queues`: the queues served. Required. */
  readonly queues: readonly string[];
  /**
   * `--label k=v` (repeatable, or comma-separated) / `AGENTCOM_LABELS` (`k=v,k2=v2`) / `labels`:
   * this agent's labels, sent in the handshake (the hub shows them). Default none: `{}`.
   */
  readonly labels: Readonly<Record<string, string>>;
  /** `--exec` or `--wake` (exactly one): how tasks are carried out. */
  readonly runner: RunnerConfig;
  /** `--state-dir` / `AGENTCOM_STATE_DIR` / `stateDir`. Default `$XDG_STATE_HOME/agentcom/<agentId>` (`~/.local/state/...`). */
  readonly stateDir: string;
  /** `--heartbeat-ms` / `AGENTCOM_HEARTBEAT_MS`: heartbeat period. Default 5000. */
  readonly heartbeatMs: number;
  /** `--drain-grace-ms` / `AGENTCOM_DRAIN_GRACE_MS`: how long SIGTERM waits for the running task. Default 30000. */
  readonly drainGraceMs: number;
  /** `--kill-grace-ms` / `AGENTCOM_KILL_GRACE_MS`: SIGTERM → SIGKILL delay for a task's process group. Default 5000. */
  readonly killGraceMs: number;
  /** `--ack-timeout-ms` / `AGENTCOM_ACK_TIMEOUT_MS`: how long an event waits for the hub's ack. Default 10000. */
  readonly ackTimeoutMs: number;
  /** `--failover-attempts` / `AGENTCOM_FAILOVER_ATTEMPTS`: failed connection attempts on one URL before the next (several URLs only). Default 3. */
  readonly failoverAttempts: number;
  /** `--handshake-timeout-ms` / `AGENTCOM_HANDSHAKE_TIMEOUT_MS`: an `/agent` handshake taking longer once the websocket is open is a failed attempt. Default 20000. */
  readonly handshakeTimeoutMs: number;
  /** `--log-level` / `LOG_LEVEL`. Default `info`. */
  readonly logLevel: LogLevel;
  /** `--log-file` / `AGENTCOM_LOG_FILE`: append the JSON log lines to this file. Default: stderr. */
  readonly logFile?: string;
  /** The config file that was read, if any (for the start log line). */
  readonly configFile?: string;
  /** The environment handed to task processes: this process's, minus its credentials (`CREDENTIAL_VARIABLES`). */
  readonly childEnv: Readonly<Record<string, string>>;
}

/** The flags of `agentcom-sidecar run` as the CLI parsed them: strings, not yet validated. */
export interface RunFlags {
  config?: string;
  hub?: string;
  agent?: string;
  tokenFile?: string;
  queue?: string[];
  label?: string[];
  exec?: string;
  wake?: string;
  stateDir?: string;
  heartbeatMs?: string;
  drainGraceMs?: string;
  killGraceMs?: string;
  ackTimeoutMs?: string;
  failoverAttempts?: string;
  handshakeTimeoutMs?: string;
  logLevel?: string;
  logFile?: string;
}

/** The flags the local commands (`status`, `done`, `fail`) use to find the running sidecar. */
export interface LocalFlags {
  config?: string;
  stateDir?: string;
  agent?: string;
}

/** The name of the IPC socket in the state dir. */
export const IPC_SOCKET_NAME = 'sidecar.sock';
/** Longest unix socket path Linux accepts (`sun_path` is 108 bytes, NUL included). */
const MAX_SOCKET_PATH_BYTES = 107;

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

const stateDirSchema = z
  .string()
  .min(1)
  .refine(
    (dir) => Buffer.byteLength(join(dir, IPC_SOCKET_NAME)) <= MAX_SOCKET_PATH_BYTES,
    `is too long: <state-dir>/${IPC_SOCKET_NAME} must fit in ${MAX_SOCKET_PATH_BYTES} bytes (a unix socket path)`,
  );

/** Validates the assembled strings; keys are {@link Setting}s so an issue maps to its option. */
const settingsSchema = z
  .object({
    hubUrls: z.array(hubUrlSchema).min(1, 'needs at least one URL'),
    agentId: agentIdSchema,
    queues: z.array(queueNameSchema).min(1, 'needs at least one queue').max(32),
    labels: labelsSchema,
    stateDir: stateDirSchema,
    heartbeatMs: integerSchema(50, 600_000),
    drainGraceMs: integerSchema(0, 86_400_000),
    killGraceMs: integerSchema(0, 600_000),
    ackTimeoutMs: integerSchema(100, 600_000),
    failoverAttempts: integerSchema(1, 1000),
    handshakeTimeoutMs: integerSchema(100, 600_000),
    logLevel: z.enum(LOG_LEVELS),
    logFile: z.string().min(1).optional(),
  })
  .strict();

/** A loaded config, with the names its settings go by. */
export interface NamedRunConfig {
  readonly config: SidecarConfig;
  /**
   * The name an error found after loading gives a setting (a log file that cannot be opened):
   * `--log-file (AGENTCOM_LOG_FILE)`, or `--log-file (logFile in FILE)` for a value from the
   * config file.
   */
  readonly optionName: (setting: Setting) => string;
}

/**
 * Builds the frozen config from the parsed flags, the environment and the config file (in that
 * order of precedence). Throws {@link ConfigError} naming the first bad or missing option. Reads
 * the token file (refusing one that group or others may access) and checks that the `--exec` /
 * `--wake` command exists, so a broken setup fails at start rather than on the first task.
 */
export function loadRunConfig(flags: RunFlags, env: Env = process.env): SidecarConfig {
  return loadNamedRunConfig(flags, env).config;
}

/** {@link loadRunConfig}, with the name each setting goes by in errors. */
export function loadNamedRunConfig(flags: RunFlags, env: Env = process.env): NamedRunConfig {
  const file = loadConfigFile(flags.config, env);
  const layers = new Layers(
    {
      hubUrls: flags.hub,
      agentId: flags.agent,
      tokenFile: flags.tokenFile,
      queues:
        flags.queue !== undefined && flags.queue.length > 0 ? flags.queue.join(',') : undefined,
      labels:
        flags.label !== undefined && flags.label.length > 0 ? flags.label.join(',') : undefined,
      exec: flags.exec,
      wake: flags.wake,
      stateDir: flags.stateDir,
      heartbeatMs: flags.heartbeatMs,
      drainGraceMs: flags.drainGraceMs,
      killGraceMs: flags.killGraceMs,
      ackTimeoutMs: flags.ackTimeoutMs,
      failoverAttempts: flags.failoverAttempts,
      handshakeTimeoutMs: flags.handshakeTimeoutMs,
      logLevel: flags.logLevel,
      logFile: flags.logFile,
    },
    env,
    file,
  );
  const required = (setting: Setting): string => {
    const value = layers.pick(setting);
    if (value === undefined) throw new ConfigError(layers.optionName(setting), 'is required');
    return value;
  };

  const hub = required('hubUrls');
  const agentId = required('agentId');
  const queues = unique(splitList(required('queues')));
  // `pick` before `optionName`: it records whether the text came from the config file.
  const labelsText = layers.pick('labels') ?? '';
  const labels = parseLabels(labelsText, layers.optionName('labels'));
  const runner = pickRunner(layers);
  const token = readToken(layers);

  const parsed = settingsSchema.safeParse({
    hubUrls: unique(splitList(hub)),
    agentId,
    queues,
    labels,
    // absolute: the wake command and its agent get it, and may run in another directory
    stateDir: resolve(layers.pick('stateDir') ?? defaultStateDir(agentId, env)),
    heartbeatMs: layers.pick('heartbeatMs') ?? '5000',
    drainGraceMs: layers.pick('drainGraceMs') ?? '30000',
    killGraceMs: layers.pick('killGraceMs') ?? '5000',
    ackTimeoutMs: layers.pick('ackTimeoutMs') ?? '10000',
    failoverAttempts: layers.pick('failoverAttempts') ?? '3',
    handshakeTimeoutMs: layers.pick('handshakeTimeoutMs') ?? '20000',
    logLevel: layers.pick('logLevel') ?? 'info',
    logFile: layers.pick('logFile'),
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const setting = (issue?.path[0] ?? 'hubUrls') as Setting;
    throw new ConfigError(layers.optionName(setting), issueText(setting, issue));
  }
  const { logFile, ...settings } = parsed.data;

  const config = deepFreeze({
    ...settings,
    token,
    ...(logFile !== undefined && { logFile }),
    ...(file !== undefined && { configFile: file.path }),
    runner,
    childEnv: taskEnvironment(env),
  });
  return { config, optionName: (setting) => layers.optionName(setting) };
}

/**
 * Where the local commands (`status`, `done`, `fail`) find the running sidecar: its state dir
 * and IPC socket, resolved as `run` resolves them (`--state-dir`, `AGENTCOM_STATE_DIR`, the config
 * file, else the default state dir of `--agent` / `AGENTCOM_AGENT` / `agent`).
 */
export function resolveLocalTarget(
  flags: LocalFlags,
  env: Env = process.env,
): { stateDir: string; socketPath: string } {
  const file = loadConfigFile(flags.config, env);
  const layers = new Layers({ stateDir: flags.stateDir, agentId: flags.agent }, env, file);
  let stateDir = layers.pick('stateDir');
  if (stateDir === undefined) {
    const agentId = layers.pick('agentId');
    if (agentId === undefined) {
      throw new ConfigError(
        `${layers.optionName('stateDir')} or ${layers.optionName('agentId')}`,
        'is required to find the running sidecar',
      );
    }
    const checked = agentIdSchema.safeParse(agentId);
    if (!checked.success) {
      throw new ConfigError(
        layers.optionName('agentId'),
        checked.error.issues[0]?.message ?? 'is not valid',
      );
    }
    stateDir = defaultStateDir(agentId, env);
  }
  stateDir = resolve(stateDir);
  return { stateDir, socketPath: join(stateDir, IPC_SOCKET_NAME) };
}

/** `--config` / `AGENTCOM_CONFIG` (must exist), else the default file (may be missing). */
function loadConfigFile(flag: string | undefined, env: Env): ConfigFile | undefined {
  const named = nonEmpty(flag) ?? nonEmpty(env.AGENTCOM_CONFIG);
  if (named !== undefined) return readConfigFile(named, true);
  const base = nonEmpty(env.XDG_CONFIG_HOME) ?? join(nonEmpty(env.HOME) ?? homedir(), '.config');
  return readConfigFile(join(base, 'agentcom', 'sidecar.json'), false);
}

/**
 * `--exec` or `--wake`, exactly one, from the highest layer that sets either: a flag overrides a
 * mode chosen in the environment or the config file, but one layer may not set both.
 */
function pickRunner(layers: Layers): RunnerConfig {
  const candidates: Array<{ exec?: Command; wake?: Command; where: string; file?: true }> = [
    {
      exec: text(layers.flag('exec')),
      wake: text(layers.flag('wake')),
      where: '--exec and --wake',
    },
    {
      exec: text(nonEmpty(layers.env.AGENTCOM_EXEC)),
      wake: text(nonEmpty(layers.env.AGENTCOM_WAKE)),
      where: 'AGENTCOM_EXEC and AGENTCOM_WAKE',
    },
    {
      exec: fileCommand(layers.file, 'exec'),
      wake: fileCommand(layers.file, 'wake'),
      where: `"exec" and "wake" in ${layers.file?.path ?? 'the config file'}`,
      file: true,
    },
  ];
  for (const { exec, wake, where, file } of candidates) {
    if (exec !== undefined && wake !== undefined) {
      throw new ConfigError(where, 'give one of them, not both (a sidecar runs in one mode)');
    }
    // So that an error names the file's key: `--exec (exec in FILE)`.
    if (file === true) layers.tookFromFile(exec !== undefined ? 'exec' : 'wake');
    if (exec !== undefined) {
      return { kind: 'exec', argv: commandArgv(exec, layers.optionName('exec'), layers.env) };
    }
    if (wake !== undefined) {
      return { kind: 'wake', argv: commandArgv(wake, layers.optionName('wake'), layers.env) };
    }
  }
  throw new ConfigError(
    '--exec or --wake (AGENTCOM_EXEC or AGENTCOM_WAKE)',
    'one of them is required',
  );
}

/** A command as configured: a line to split like a shell, or (config file only) an argv. */
type Command = { line: string } | { argv: readonly string[] };

function text(line: string | undefined): Command | undefined {
  return line === undefined ? undefined : { line };
}

function fileCommand(file: ConfigFile | undefined, key: 'exec' | 'wake'): Command | undefined {
  if (file === undefined) return undefined;
  const argv = file.argv[key];
  if (argv !== undefined) return { argv };
  return text(nonEmpty(file.text[key]));
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

/**
 * The `key=value` items of `--label` / `AGENTCOM_LABELS` / `labels` (comma-separated; the config
 * file's forms arrive as this text too), split at each item's first `=`, key and value trimmed.
 * An item with no `=` or an empty key, or a key given twice, is refused naming `option`. The
 * limits (key and value lengths, number of labels) are `labelsSchema`'s, in `settingsSchema`.
 */
function parseLabels(text: string, option: string): Record<string, string> {
  const labels = new Map<string, string>();
  for (const item of splitList(text)) {
    const equals = item.indexOf('=');
    if (equals < 0) throw new ConfigError(option, `"${item}" is not key=value`);
    const key = item.slice(0, equals).trim();
    if (key === '') throw new ConfigError(option, `"${item}" has an empty key`);
    if (labels.has(key)) {
      throw new ConfigError(option, `the label "${key}" is given twice: give each key once`);
    }
    labels.set(key, item.slice(equals + 1).trim());
  }
  return Object.fromEntries(labels);
}

/** What a `settingsSchema` issue says: its message, and which item or label it is about. */
function issueText(setting: Setting, issue: z.core.$ZodIssue | undefined): string {
  if (issue === undefined) return 'is not valid';
  const item = issue.path[1];
  if (item === undefined) return issue.message;
  if (setting !== 'labels') return `${issue.message} (item ${String(item)})`;
  // A record's bad key is an `invalid_key` issue ("Invalid key in record"), the key's own inside.
  if (issue.code === 'invalid_key') {
    return `${issue.issues[0]?.message ?? issue.message} (label key "${String(item)}")`;
  }
  return `${issue.message} (label "${String(item)}")`;
}

function unique(items: string[]): string[] {
  return [...new Set(items)];
}

/** The longest token the handshake accepts. */
const MAX_TOKEN_LENGTH = handshakeAuthSchema.shape.token.maxLength ?? 512;

/**
 * The agent token, by precedence: `--token-file`, `AGENTCOM_TOKEN_FILE`, `AGENTCOM_TOKEN`, the
 * config file's `tokenFile`. A token file that group or others may read or write is refused: the
 * token is the agent's identity.
 */
function readToken(layers: Layers): string {
  const fromEnv = nonEmpty(layers.env.AGENTCOM_TOKEN)?.trim();
  const path = layers.flag('tokenFile') ?? nonEmpty(layers.env.AGENTCOM_TOKEN_FILE);
  if (path === undefined && fromEnv !== undefined) {
    if (fromEnv.length > MAX_TOKEN_LENGTH) {
      throw new ConfigError('AGENTCOM_TOKEN', `is longer than ${MAX_TOKEN_LENGTH} characters`);
    }
    return fromEnv;
  }
  const tokenPath = path ?? layers.pick('tokenFile');
  if (tokenPath === undefined) {
    throw new ConfigError('--token-file (AGENTCOM_TOKEN_FILE or AGENTCOM_TOKEN)', 'is required');
  }
  const option = layers.optionName('tokenFile');
  let mode: number;
  let text: string;
  try {
    mode = statSync(tokenPath).mode;
    text = readFileSync(tokenPath, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(option, `cannot read ${tokenPath} (${code})`);
  }
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    throw new ConfigError(
      option,
      `${tokenPath} is readable or writable by group or others (mode ${octal}); ` +
        `make it owner-only: chmod 600 ${tokenPath}`,
    );
  }
  const token = text.trim();
  if (token === '') throw new ConfigError(option, `${tokenPath} is empty`);
  if (token.length > MAX_TOKEN_LENGTH) {
    throw new ConfigError(
      option,
      `the token in ${tokenPath} is longer than ${MAX_TOKEN_LENGTH} characters`,
    );
  }
  return token;
}

/** Splits a command line (or takes a config file's argv) and checks its command is executable. */
function commandArgv(command: Command, option: string, env: Env): string[] {
  let argv: string[];
  if ('argv' in command) {
    argv = [...command.argv];
  } else {
    try {
      argv = splitCommand(command.line);
    } catch (err) {
      if (err instanceof SplitCommandError) throw new ConfigError(option, err.message);
      throw err;
    }
  }
  const name = argv[0];
  if (name === undefined || name === '') {
    throw new ConfigError(option, 'names no command');
  }
  if (!isExecutableCommand(name, env)) {
    const where = name.includes('/') ? 'is not an executable file' : 'was not found on PATH';
    throw new ConfigError(option, `command "${name}" ${where}`);
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

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

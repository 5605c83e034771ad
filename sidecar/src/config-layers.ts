import type { ConfigFile, ConfigFileKey } from './config-file';

/**
 * The layers the sidecar's settings come from, highest first: flags, environment variables, the
 * config file. The caller (config.ts) hands the environment in: this module reads no `process.env`.
 */

export type Env = Readonly<Record<string, string | undefined>>;

/** Each setting with the flag, variable and config-file key that set it: error messages name them. */
export const SOURCES = {
  hubUrls: { flag: '--hub', env: 'AGENTCOM_HUB', key: 'hub' },
  agentId: { flag: '--agent', env: 'AGENTCOM_AGENT', key: 'agent' },
  tokenFile: { flag: '--token-file', env: 'AGENTCOM_TOKEN_FILE', key: 'tokenFile' },
  queues: { flag: '--queue', env: 'AGENTCOM_QUEUES', key: 'queues' },
  labels: { flag: '--label', env: 'AGENTCOM_LABELS', key: 'labels' },
  exec: { flag: '--exec', env: 'AGENTCOM_EXEC', key: 'exec' },
  wake: { flag: '--wake', env: 'AGENTCOM_WAKE', key: 'wake' },
  stateDir: { flag: '--state-dir', env: 'AGENTCOM_STATE_DIR', key: 'stateDir' },
  heartbeatMs: { flag: '--heartbeat-ms', env: 'AGENTCOM_HEARTBEAT_MS', key: 'heartbeatMs' },
  drainGraceMs: { flag: '--drain-grace-ms', env: 'AGENTCOM_DRAIN_GRACE_MS', key: 'drainGraceMs' },
  killGraceMs: { flag: '--kill-grace-ms', env: 'AGENTCOM_KILL_GRACE_MS', key: 'killGraceMs' },
  ackTimeoutMs: { flag: '--ack-timeout-ms', env: 'AGENTCOM_ACK_TIMEOUT_MS', key: 'ackTimeoutMs' },
  failoverAttempts: {
    flag: '--failover-attempts',
    env: 'AGENTCOM_FAILOVER_ATTEMPTS',
    key: 'failoverAttempts',
  },
  handshakeTimeoutMs: {
    flag: '--handshake-timeout-ms',
    env: 'AGENTCOM_HANDSHAKE_TIMEOUT_MS',
    key: 'handshakeTimeoutMs',
  },
  logLevel: { flag: '--log-level', env: 'LOG_LEVEL', key: 'logLevel' },
  logFile: { flag: '--log-file', env: 'AGENTCOM_LOG_FILE', key: 'logFile' },
} as const satisfies Record<string, { flag: string; env: string; key: ConfigFileKey }>;
export type Setting = keyof typeof SOURCES;

/**
 * The layers of the configuration, highest first: flags, environment, config file. Remembers
 * where each setting came from, so an error names the flag and the variable, or the file's key.
 */
export class Layers {
  private readonly origin = new Map<Setting, 'file'>();

  constructor(
    private readonly flags: Partial<Record<Setting, string>>,
    readonly env: Env,
    readonly file: ConfigFile | undefined,
  ) {}

  /** The setting's text from the highest layer that has it. */
  pick(setting: Setting): string | undefined {
    const { env, key } = SOURCES[setting];
    const fromFlagOrEnv = nonEmpty(this.flags[setting]) ?? nonEmpty(this.env[env]);
    if (fromFlagOrEnv !== undefined) return fromFlagOrEnv;
    const fromFile = nonEmpty(this.file?.text[key]);
    if (fromFile !== undefined) this.origin.set(setting, 'file');
    return fromFile;
  }

  /**
   * Records that the config file set `setting`, for one read without {@link pick}: `exec` and
   * `wake` are taken from one layer together (config.ts, `pickRunner`).
   */
  tookFromFile(setting: Setting): void {
    this.origin.set(setting, 'file');
  }

  /** The name an error gives the setting: `--flag (VARIABLE)`, or `--flag (key in FILE)`. */
  optionName(setting: Setting): string {
    const { flag, env, key } = SOURCES[setting];
    if (this.origin.get(setting) === 'file' && this.file !== undefined) {
      return `${flag} (${key} in ${this.file.path})`;
    }
    return `${flag} (${env})`;
  }

  flag(setting: Setting): string | undefined {
    return nonEmpty(this.flags[setting]);
  }
}

export function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

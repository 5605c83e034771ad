import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError } from './config-error';

/**
 * The sidecar's config file (`--config FILE`, default `~/.config/agentcom/sidecar.json`): one JSON
 * object whose keys are the `run` options in camelCase. It is the lowest layer of the
 * configuration: flags and environment variables override it. An unknown key is an error, so a
 * typo never silently falls back to a default.
 */

/** How each key's JSON value is read. */
const KEY_KINDS = {
  hub: 'list',
  agent: 'string',
  tokenFile: 'path',
  queues: 'list',
  labels: 'labels',
  exec: 'command',
  wake: 'command',
  stateDir: 'path',
  heartbeatMs: 'integer',
  drainGraceMs: 'integer',
  killGraceMs: 'integer',
  ackTimeoutMs: 'integer',
  failoverAttempts: 'integer',
  handshakeTimeoutMs: 'integer',
  logLevel: 'string',
  logFile: 'path',
} as const satisfies Record<string, 'string' | 'path' | 'list' | 'labels' | 'command' | 'integer'>;

export type ConfigFileKey = keyof typeof KEY_KINDS;
export const CONFIG_FILE_KEYS = Object.keys(KEY_KINDS) as ConfigFileKey[];

/** Keys people may try that are refused with a hint rather than a bare "unknown key". */
const HINTS: Readonly<Record<string, string>> = {
  token: 'the token never goes in the config file: name a file holding it with "tokenFile"',
  queue: 'the key is "queues"',
  label: 'the key is "labels"',
  config: 'a config file cannot name another one',
};

export interface ConfigFile {
  readonly path: string;
  /**
   * Each key as a flag would give it: text. Lists (`hub`, `queues`) are comma-joined, and so are
   * `labels` as `key=value` items (see {@link labelsText}); relative paths (`tokenFile`,
   * `stateDir`, `logFile`) are resolved against the file's directory; a command given as a
   * string is kept as text, to be split like `--exec`.
   */
  readonly text: Partial<Record<ConfigFileKey, string>>;
  /** `exec` / `wake` given as a JSON array of strings: the argv as is, never split. */
  readonly argv: Partial<Record<'exec' | 'wake', readonly string[]>>;
}

/**
 * Reads and checks the config file. A missing file is `undefined` unless `explicit` (named by
 * `--config` or `AGENTCOM_CONFIG`), which makes it an error. Throws {@link ConfigError} naming
 * `--config` and the offending key.
 */
export function readConfigFile(path: string, explicit: boolean): ConfigFile | undefined {
  const option = `--config (${path})`;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    if (code === 'ENOENT' && !explicit) return undefined;
    throw new ConfigError(option, `cannot read the config file (${code})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(option, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(option, 'must hold one JSON object');
  }
  const base = dirname(resolve(path));
  const out: { text: ConfigFile['text']; argv: ConfigFile['argv'] } = { text: {}, argv: {} };
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (!isKey(key)) {
      const hint = HINTS[key];
      throw new ConfigError(option, `unknown key "${key}"${hint === undefined ? '' : `: ${hint}`}`);
    }
    readKey(key, value, base, option, out);
  }
  return { path, text: out.text, argv: out.argv };
}

function isKey(key: string): key is ConfigFileKey {
  return Object.hasOwn(KEY_KINDS, key);
}

function readKey(
  key: ConfigFileKey,
  value: unknown,
  base: string,
  option: string,
  out: { text: ConfigFile['text']; argv: ConfigFile['argv'] },
): void {
  const kind = KEY_KINDS[key];
  const bad = (expected: string): ConfigError =>
    new ConfigError(option, `"${key}" must be ${expected}`);
  switch (kind) {
    case 'string':
      if (typeof value !== 'string') throw bad('a string');
      out.text[key] = value;
      return;
    case 'path':
      if (typeof value !== 'string' || value === '') throw bad('a non-empty path');
      out.text[key] = resolve(base, value);
      return;
    case 'integer':
      if (typeof value === 'number' && Number.isFinite(value)) out.text[key] = String(value);
      else if (typeof value === 'string') out.text[key] = value;
      else throw bad('a number');
      return;
    case 'list':
      if (typeof value === 'string') out.text[key] = value;
      else if (isStringArray(value)) out.text[key] = value.join(',');
      else throw bad('a string or an array of strings');
      return;
    case 'labels':
      out.text[key] = labelsText(value, option);
      return;
    case 'command':
      if (typeof value === 'string') out.text[key] = value;
      else if (isStringArray(value) && value.length > 0) out.argv[key as 'exec' | 'wake'] = value;
      else throw bad('a command line (string) or an argv (non-empty array of strings)');
      return;
  }
}

/**
 * `labels` as the `--label` flags give them: `key=value` items, comma-joined (config.ts splits
 * them at the commas, then each at its first `=`). The file may hold a `"k=v,k2=v2"` string (taken
 * as is), an array of `"k=v"` strings, or an object of string values. A comma inside an item, or
 * an `=` inside an object's key, cannot be said in that text: refused rather than mis-split.
 */
function labelsText(value: unknown, option: string): string {
  if (typeof value === 'string') return value;
  let items: string[];
  if (isStringArray(value)) {
    items = value;
  } else if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    items = Object.entries(value).map(([name, text]) => {
      if (typeof text !== 'string') {
        throw new ConfigError(option, `"labels": the value of "${name}" must be a string`);
      }
      if (name.includes('=')) {
        throw new ConfigError(option, `"labels": the label name "${name}" cannot hold "="`);
      }
      return `${name}=${text}`;
    });
  } else {
    throw new ConfigError(
      option,
      '"labels" must be an object of string values, an array of "key=value" strings, ' +
        'or a "key=value,key=value" string',
    );
  }
  const withComma = items.find((item) => item.includes(','));
  if (withComma !== undefined) {
    throw new ConfigError(
      option,
      `"labels": "${withComma}" holds a comma, which a label cannot (labels are read as ` +
        'key=value,key=value)',
    );
  }
  return items.join(',');
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

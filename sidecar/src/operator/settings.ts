import { readFileSync, statSync } from 'node:fs';
import { ADMIN_KEY_PATTERN } from '@agentcom/shared';
import { HubConfigError, UsageError } from './errors';

/** Where the hub is and the key to its API. Read from flags and the environment, never argv's key. */
export interface HubSettings {
  /** Base URL without a trailing slash, e.g. `http://hub:8080` (a path prefix is kept). */
  readonly url: string;
  /** The admin key, sent as `Authorization: Bearer`. Never printed. */
  readonly adminKey: string;
}

/** The global flags that locate the hub. */
export interface HubFlags {
  url?: string;
  adminKeyFile?: string;
}

export type Env = Readonly<Record<string, string | undefined>>;

/** A key longer than this is not an admin key (a wrong file was named). */
const MAX_KEY_LENGTH = 4096;

const nonEmpty = (value: string | undefined): string | undefined => {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === '' ? undefined : trimmed;
};

/**
 * The hub URL from `--url`, else `AGENTCOM_URL`; the admin key from `--admin-key-file`, else
 * `AGENTCOM_ADMIN_KEY_FILE`, else `AGENTCOM_ADMIN_KEY`. A key file must be owner-only (like the
 * sidecar's token file). Throws {@link HubConfigError} (exit 5) naming the flag and variable.
 */
export function resolveHubSettings(flags: HubFlags, env: Env): HubSettings {
  return { url: resolveUrl(flags, env), adminKey: resolveAdminKey(flags, env) };
}

function resolveUrl(flags: HubFlags, env: Env): string {
  const raw = nonEmpty(flags.url) ?? nonEmpty(env.AGENTCOM_URL);
  const option = flags.url !== undefined ? '--url' : '--url (AGENTCOM_URL)';
  if (raw === undefined) {
    throw new HubConfigError(
      `${option}: is required: the hub's URL, e.g. AGENTCOM_URL=http://localhost:8080`,
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new HubConfigError(`${option}: ${raw} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new HubConfigError(`${option}: must be an http:// or https:// URL, not ${raw}`);
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new HubConfigError(
      `${option}: must not hold credentials: the admin key comes from AGENTCOM_ADMIN_KEY or --admin-key-file`,
    );
  }
  if (parsed.search !== '' || parsed.hash !== '') {
    throw new HubConfigError(`${option}: must not have a query or fragment: ${raw}`);
  }
  return parsed.href.replace(/\/+$/, '');
}

function resolveAdminKey(flags: HubFlags, env: Env): string {
  const file = nonEmpty(flags.adminKeyFile) ?? nonEmpty(env.AGENTCOM_ADMIN_KEY_FILE);
  if (file !== undefined) {
    const option =
      flags.adminKeyFile !== undefined
        ? '--admin-key-file'
        : '--admin-key-file (AGENTCOM_ADMIN_KEY_FILE)';
    return readKeyFile(file, option);
  }
  const fromEnv = nonEmpty(env.AGENTCOM_ADMIN_KEY);
  if (fromEnv === undefined) {
    throw new HubConfigError(
      'admin key: is required: set AGENTCOM_ADMIN_KEY, or name a file with --admin-key-file (AGENTCOM_ADMIN_KEY_FILE)',
    );
  }
  if (fromEnv.length > MAX_KEY_LENGTH) {
    throw new HubConfigError(`AGENTCOM_ADMIN_KEY: is longer than ${MAX_KEY_LENGTH} characters`);
  }
  return headerSafeKey(fromEnv, 'AGENTCOM_ADMIN_KEY');
}

/**
 * The key as it goes in the `Authorization` header: printable ASCII without spaces, as the hub
 * requires of it. Anything else (a second line in the file or the variable) is refused here,
 * without echoing the key: fetch would throw an error that quotes the whole header.
 */
function headerSafeKey(key: string, where: string): string {
  if (!ADMIN_KEY_PATTERN.test(key)) {
    throw new HubConfigError(
      `${where}: the key holds a character an HTTP header cannot carry (a space, a second line, ` +
        'a non-ASCII character); the hub accepts printable ASCII only',
    );
  }
  return key;
}

function readKeyFile(path: string, option: string): string {
  let mode: number;
  let text: string;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new HubConfigError(`${option}: cannot read ${path} (${code})`);
  }
  if ((mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, '0');
    throw new HubConfigError(
      `${option}: ${path} is readable or writable by group or others (mode ${octal}); ` +
        `make it owner-only: chmod 600 ${path}`,
    );
  }
  const key = text.trim();
  if (key === '') throw new HubConfigError(`${option}: ${path} is empty`);
  if (key.length > MAX_KEY_LENGTH) {
    throw new HubConfigError(`${option}: ${path} holds more than ${MAX_KEY_LENGTH} characters`);
  }
  return headerSafeKey(key, `${option}: ${path}`);
}

/** `--admin-key` is refused on purpose: argv is visible to every user of the machine (`ps`). */
export function refuseKeyInArgv(): never {
  throw new UsageError(
    '--admin-key',
    'the admin key is never taken from the command line (other users see it in `ps`): set AGENTCOM_ADMIN_KEY or use --admin-key-file FILE',
  );
}

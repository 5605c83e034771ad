/**
 * Variables that name a credential: the agent token the sidecar authenticates with, and the admin
 * key of the operator CLI, often exported in the shell the sidecar is started from. A task process
 * runs what a task payload asks (through an AI agent): it must not be able to print these into its
 * log or result.
 */
export const CREDENTIAL_VARIABLES: readonly string[] = [
  'AGENTCOM_TOKEN',
  'AGENTCOM_TOKEN_FILE',
  'AGENTCOM_ADMIN_KEY',
  'AGENTCOM_ADMIN_KEY_FILE',
];

/** The environment of a task process: the sidecar's `env` without {@link CREDENTIAL_VARIABLES}. */
export function taskEnvironment(
  env: Readonly<Record<string, string | undefined>>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !CREDENTIAL_VARIABLES.includes(name)) out[name] = value;
  }
  return out;
}

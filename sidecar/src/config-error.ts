/**
 * A missing or malformed option. `option` names it the way the user typed it (flag and env
 * variable), so the CLI can print one line and exit with code 2.
 */
export class ConfigError extends Error {
  readonly option: string;

  constructor(option: string, message: string) {
    super(`${option}: ${message}`);
    this.name = 'ConfigError';
    this.option = option;
  }
}

export function isConfigError(value: unknown): value is ConfigError {
  return value instanceof ConfigError;
}

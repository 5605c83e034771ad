import type { ErrorBody } from '@agentcom/shared';
import { OPERATOR_EXIT_CODES, type OperatorExitCode } from './exit-codes';
import { oneLine } from './format';

/**
 * Every failure of `agentcom` is one of these: the CLI prints `agentcom: <code>: <message>` on
 * stderr (with `--json`, also `{"error":{code,message}}` on stdout) and exits with `exitCode`.
 * Codes starting with `E_` come from the hub (shared/src/errors/codes.ts); the CLI's own are
 * `E_USAGE`, `E_CONFIG`, `E_UNREACHABLE` and `E_INTERRUPTED`.
 */
export abstract class OperatorError extends Error {
  abstract readonly code: string;
  abstract readonly exitCode: OperatorExitCode;

  /** The JSON printed on stdout with `--json`. */
  body(): { error: { code: string; message: string; details?: unknown } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/**
 * A bad option or argument, found before anything was sent. `option` names it (`--payload`);
 * none for the parser's own errors, whose message names what is wrong (see {@link fromParser}).
 */
export class UsageError extends OperatorError {
  readonly code = 'E_USAGE';
  readonly exitCode = OPERATOR_EXIT_CODES.USAGE;

  constructor(
    readonly option: string | undefined,
    message: string,
  ) {
    super(option === undefined ? message : `${option}: ${message}`);
    this.name = 'UsageError';
  }

  /**
   * commander's error (`error: unknown option '--quue'` and maybe `(Did you mean --queue?)` on a
   * line of its own), as one line.
   */
  static fromParser(message: string): UsageError {
    return new UsageError(undefined, oneLine(message.replace(/^error: /, '')));
  }
}

/** No URL or admin key (or an unreadable / malformed one): nothing can be sent. */
export class HubConfigError extends OperatorError {
  override readonly name = 'HubConfigError';
  readonly code = 'E_CONFIG';
  readonly exitCode = OPERATOR_EXIT_CODES.NO_HUB;
}

/**
 * The hub did not answer, or something else did (a proxy's 502 page): no agentcom error body.
 * Transient: `--wait` and `--watch` keep trying for a while.
 */
export class HubUnreachableError extends OperatorError {
  override readonly name = 'HubUnreachableError';
  readonly code = 'E_UNREACHABLE';
  readonly exitCode = OPERATOR_EXIT_CODES.NO_HUB;
}

/** The hub's answer `{error: {code, message, details?}}` with an HTTP error status. */
export class ApiError extends OperatorError {
  readonly exitCode = OPERATOR_EXIT_CODES.API_ERROR;

  constructor(
    readonly status: number,
    readonly errorBody: ErrorBody,
  ) {
    super(errorBody.error.message);
    this.name = 'ApiError';
  }

  get code(): string {
    return this.errorBody.error.code;
  }

  /** 5xx and 429: worth another try (a replica restarting, Redis failing over, rate limits). */
  get transient(): boolean {
    return this.status >= 500 || this.status === 429;
  }

  override body(): ErrorBody {
    return this.errorBody;
  }
}

/**
 * `task list --all` kept being sent back to a page it had read (the hub starts a list over when
 * both tasks its cursor names leave it meanwhile): given up rather than loop, with exit 1.
 */
export class ListingUnstableError extends OperatorError {
  override readonly name = 'ListingUnstableError';
  readonly code = 'E_LISTING_UNSTABLE';
  readonly exitCode = OPERATOR_EXIT_CODES.API_ERROR;
}

/** Ctrl-C while a request was in flight. */
export class InterruptedError extends OperatorError {
  readonly code = 'E_INTERRUPTED';
  readonly exitCode = OPERATOR_EXIT_CODES.INTERRUPTED;

  constructor(message = 'interrupted') {
    super(message);
    this.name = 'InterruptedError';
  }
}

/** Worth retrying while waiting or watching: the hub was unreachable or answered 5xx / 429. */
export function isTransient(err: unknown): boolean {
  return err instanceof HubUnreachableError || (err instanceof ApiError && err.transient);
}

/**
 * Exit codes of `agentcom`, the operator CLI, documented in sidecar/README.md ("Operator CLI").
 * `task add --wait` exits with the task's outcome: 0 completed, 1 failed, 3 cancelled, 4 when
 * `--wait-timeout-s` ran out first.
 */
export const OPERATOR_EXIT_CODES = {
  /** Done; `--wait`: the task completed. */
  OK: 0,
  /** The hub answered with an error (`agentcom: E_CODE: message`); `--wait`: the task failed. */
  API_ERROR: 1,
  /** Bad usage: an unknown command or option, a malformed value, a payload that is not JSON. */
  USAGE: 2,
  /** `--wait`: the task was cancelled. */
  CANCELLED: 3,
  /** `--wait`: `--wait-timeout-s` ran out before the task finished (it goes on). */
  WAIT_TIMEOUT: 4,
  /** No hub to talk to: URL or admin key missing or unreadable, or the hub did not answer. */
  NO_HUB: 5,
  /** Ctrl-C (SIGINT) stopped a command (`agents --watch` exits 0 instead). */
  INTERRUPTED: 130,
} as const;

export type OperatorExitCode = (typeof OPERATOR_EXIT_CODES)[keyof typeof OPERATOR_EXIT_CODES];

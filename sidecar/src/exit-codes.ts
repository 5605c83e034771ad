/**
 * Exit codes of `agentcom-sidecar run`, documented in sidecar/README.md. A process manager should
 * restart on 1 (and on 0 if it wants the sidecar always up) but not on 2, 3 or 4: those need a
 * human (fix the config, the token, or stop the other instance).
 */
export const EXIT_CODES = {
  /** Drained and stopped after SIGTERM/SIGINT. */
  OK: 0,
  /** An unexpected error (a bug, a failing disk). */
  UNEXPECTED: 1,
  /**
   * A missing or malformed option, or a state dir in use or unusable as it is (`state.json` a
   * directory, unreadable, or of a newer version than this sidecar reads, left untouched); one
   * line on stderr names it.
   */
  BAD_CONFIG: 2,
  /** The hub refused the handshake for good (`E_UNAUTHORIZED`, `E_PROTOCOL_VERSION`, ...). */
  REFUSED: 3,
  /** Another connection of the same agent id replaced this one (`E_REPLACED`). */
  REPLACED: 4,
  /** A second SIGTERM/SIGINT arrived while draining: stopped at once, the task killed. */
  SECOND_SIGNAL: 130,
} as const;

export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

/**
 * Exit codes of the local commands (`status`, `done`, `fail`), documented in sidecar/README.md.
 */
export const LOCAL_EXIT_CODES = {
  /** The sidecar took the request (`done` / `fail`: the report is in its outbox). */
  OK: 0,
  /** The sidecar refused it (no task in hand, not in wake mode), or did not answer. */
  REFUSED: 1,
  /** Bad usage: a missing or malformed option, a result that is not acceptable JSON. */
  USAGE: 2,
  /** The sidecar cannot be reached: not running (no one listens on its socket), or another user's. */
  NOT_RUNNING: 3,
} as const;

export type LocalExitCode = (typeof LOCAL_EXIT_CODES)[keyof typeof LOCAL_EXIT_CODES];

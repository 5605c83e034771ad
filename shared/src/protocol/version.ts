/**
 * Major version of the hub ⇄ sidecar protocol. A sidecar announcing another major is refused
 * with `E_PROTOCOL_VERSION`. See docs/protocol.md for the history.
 */
export const PROTOCOL_VERSION = 1;

/** Socket.IO namespace the sidecars connect to. */
export const AGENT_NAMESPACE = '/agent';

/** Upper bound of one Socket.IO message (engine.io `maxHttpBufferSize`). */
export const MAX_MESSAGE_BYTES = 2 * 1024 * 1024;

/**
 * Events of one connection being handled at once. Beyond it an event is answered
 * `E_RATE_LIMITED` at once, untouched (a sidecar that waits for its acks never gets there).
 */
export const MAX_EVENTS_IN_FLIGHT = 32;

/** Upper bound of a task payload or result once serialised as JSON. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

/** Deepest nesting accepted in a payload or result. */
export const MAX_JSON_DEPTH = 64;

/**
 * The sidecar's version, sent in the handshake (`sidecarVersion`) and printed by
 * `agentcom-sidecar version`. Kept equal to `sidecar/package.json` by a test (a JSON import would
 * put package.json outside `rootDir`).
 */
export const SIDECAR_VERSION = '0.1.0';

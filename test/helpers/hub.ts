import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../hub/src/config';
import { startHub, type Hub, type HubOptions } from '../../hub/src/hub';
import { createLogger } from '../../hub/src/logger';

export const TEST_ADMIN_KEY = 'test-admin-key-0123456789';

/** Short timings so fault paths run in seconds; each test may override. */
export const FAST_TIMINGS = {
  LEASE_MS: '3000',
  HEARTBEAT_MS: '500',
  ACK_TIMEOUT_MS: '2000',
  STALLED_INTERVAL_MS: '1000',
  SWEEP_MS: '200',
  PING_INTERVAL_MS: '2000',
  PING_TIMEOUT_MS: '4000',
};

/** Starts an in-process hub replica on a free port against `redisUrl`. */
export async function startTestHub(
  redisUrl: string,
  env: Record<string, string> = {},
  options: HubOptions = {},
): Promise<Hub & { url: string }> {
  const config = loadConfig({
    REDIS_URL: redisUrl,
    PORT: '0',
    HOST: '127.0.0.1',
    AGENTCOM_ADMIN_KEY: TEST_ADMIN_KEY,
    AGENTCOM_PREFIX: `t${randomBytes(3).toString('hex')}`,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...FAST_TIMINGS,
    ...env,
  });
  const logger = createLogger({ level: config.logLevel, hubId: config.hubId });
  const hub = await startHub(config, logger, options);
  return Object.assign(hub, { url: `http://127.0.0.1:${hub.port}` });
}

/** JSON request to a hub with the admin key. */
export async function api<T = unknown>(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = { authorization: `Bearer ${TEST_ADMIN_KEY}` },
): Promise<{ status: number; body: T }> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
}

export { eventually } from './poll';

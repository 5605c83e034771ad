import {
  AppError,
  PROTOCOL_VERSION,
  describeZodError,
  handshakeAuthSchema,
  type HandshakeAuth,
} from '@agentcom/shared';
import type { AgentStore } from '../fsm/agent-store';
import { tokenMatches } from '../auth/tokens';

/**
 * Checks a sidecar's handshake: payload shape, protocol major, the agent's token (constant-time
 * against its stored hash) and that it asks only for queues it is allowed to serve.
 * Throws {@link AppError} with the code the sidecar gets in `connect_error`.
 */
export async function authenticateHandshake(
  raw: unknown,
  agents: AgentStore,
): Promise<HandshakeAuth> {
  const parsed = handshakeAuthSchema.safeParse(raw);
  if (!parsed.success) {
    const protocol = (raw as { protocol?: unknown } | null)?.protocol;
    if (typeof protocol === 'number' && protocol !== PROTOCOL_VERSION) {
      throw new AppError(
        'E_PROTOCOL_VERSION',
        `protocol ${protocol} is not supported; this hub speaks ${PROTOCOL_VERSION}`,
      );
    }
    throw new AppError('E_VALIDATION', `handshake: ${describeZodError(parsed.error)}`);
  }
  const auth = parsed.data;
  if (auth.protocol !== PROTOCOL_VERSION) {
    throw new AppError(
      'E_PROTOCOL_VERSION',
      `protocol ${auth.protocol} is not supported; this hub speaks ${PROTOCOL_VERSION}`,
    );
  }
  const record = await agents.get(auth.agentId);
  if (!record || !tokenMatches(auth.token, record.tokenHash)) {
    throw new AppError('E_UNAUTHORIZED', 'unknown agent or wrong token');
  }
  if (record.allowedQueues) {
    const refused = auth.queues.filter((q) => !record.allowedQueues?.includes(q));
    if (refused.length > 0) {
      throw new AppError(
        'E_FORBIDDEN',
        `agent ${auth.agentId} may not serve queue(s) ${refused.join(', ')}`,
      );
    }
  }
  return auth;
}

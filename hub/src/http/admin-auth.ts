import { AppError } from '@agentcom/shared';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { secretMatcher } from '../auth/tokens';
import { errorBody } from './errors';

/**
 * `Authorization: <scheme> <credentials>`: the scheme (any case), one space, then one token and
 * nothing after it (Node has already trimmed the header's ends). Anything else, such as
 * `Bearer <key> extra`, is no credentials at all.
 */
const CREDENTIALS = /^([A-Za-z]+) ([^\s]+)$/;

/** `Authorization: Bearer <admin key>` (or Basic with the key as password, for browsers). */
export function presentedAdminKey(request: FastifyRequest): string | undefined {
  const match = CREDENTIALS.exec(request.headers.authorization ?? '');
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase();
  const value = match[2]!;
  if (scheme === 'bearer') return value;
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return undefined;
}

export function requireAdmin(adminKey: string) {
  const isAdminKey = secretMatcher(adminKey);
  return async (request: FastifyRequest): Promise<void> => {
    const presented = presentedAdminKey(request);
    if (presented === undefined || !isAdminKey(presented)) {
      throw new AppError(
        'E_UNAUTHORIZED',
        'admin key required: Authorization: Bearer <AGENTCOM_ADMIN_KEY>',
      );
    }
  };
}

/**
 * Like {@link requireAdmin}, for dashboards: answers 401 itself with a Basic challenge (so a
 * browser asks for the key) instead of throwing into a plugin's own error handler.
 */
export function requireAdminOrChallenge(adminKey: string) {
  const isAdminKey = secretMatcher(adminKey);
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const presented = presentedAdminKey(request);
    if (presented !== undefined && isAdminKey(presented)) return;
    await reply
      .status(401)
      .header('WWW-Authenticate', 'Basic realm="agentcom", charset="UTF-8"')
      .send(errorBody('E_UNAUTHORIZED', 'admin key required (Basic password or Bearer)'));
  };
}

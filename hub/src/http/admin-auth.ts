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
  return presentedCredentials(request)?.key;
}

function presentedCredentials(
  request: FastifyRequest,
): { scheme: 'bearer' | 'basic'; key: string } | undefined {
  const match = CREDENTIALS.exec(request.headers.authorization ?? '');
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase();
  const value = match[2]!;
  if (scheme === 'bearer') return { scheme, key: value };
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? { scheme, key: decoded.slice(colon + 1) } : undefined;
  }
  return undefined;
}

/** Methods that only read: a cross-site page cannot read their answers. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * A browser sends its cached Basic credentials with any request to the hub, also one a page of
 * another site makes it send (a form's POST): such a request must not change anything. It is
 * recognised by `Sec-Fetch-Site` (anything but `same-origin` or `none`, a typed URL), or, from a
 * browser without it, by an `Origin` of another host. A Bearer key is never sent by a browser on
 * its own, and a client that sends neither header is not a browser.
 */
function crossSiteWithBrowserCredentials(
  request: FastifyRequest,
  scheme: 'bearer' | 'basic',
): boolean {
  if (scheme !== 'basic' || SAFE_METHODS.has(request.method)) return false;
  const site = request.headers['sec-fetch-site'];
  if (typeof site === 'string') return site !== 'same-origin' && site !== 'none';
  const origin = request.headers.origin;
  if (typeof origin !== 'string') return false;
  try {
    return new URL(origin).host !== request.headers.host;
  } catch {
    return true; // `null` (a sandboxed or privacy-sensitive context) or garbage
  }
}

const CROSS_SITE_MESSAGE =
  'a request from another site with browser credentials changes nothing: send the admin key as Authorization: Bearer';

/** Whether the request carries the admin key, and may use it; throws E_FORBIDDEN if it may not. */
function checkAdmin(request: FastifyRequest, isAdminKey: (presented: string) => boolean): boolean {
  const presented = presentedCredentials(request);
  if (presented === undefined || !isAdminKey(presented.key)) return false;
  if (crossSiteWithBrowserCredentials(request, presented.scheme)) {
    throw new AppError('E_FORBIDDEN', CROSS_SITE_MESSAGE);
  }
  return true;
}

export function requireAdmin(adminKey: string) {
  const isAdminKey = secretMatcher(adminKey);
  return async (request: FastifyRequest): Promise<void> => {
    if (!checkAdmin(request, isAdminKey)) {
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
    let allowed: boolean;
    try {
      allowed = checkAdmin(request, isAdminKey);
    } catch {
      await reply.status(403).send(errorBody('E_FORBIDDEN', CROSS_SITE_MESSAGE));
      return;
    }
    if (allowed) return;
    await reply
      .status(401)
      .header('WWW-Authenticate', 'Basic realm="agentcom", charset="UTF-8"')
      .send(errorBody('E_UNAUTHORIZED', 'admin key required (Basic password or Bearer)'));
  };
}

import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AppError } from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import { requireAdminOrChallenge } from '../http/admin-auth';
import type { RedisProblemCheck } from '../redis/redis-probe';
import { renderAgentsPage } from './page-html';
import { NO_SESSION, type UiSessions } from './ui-session';

/** Where the page loads the Socket.IO browser client (hub.ts runs with `serveClient: false`). */
export const CLIENT_SCRIPT_PATH = '/ui/socket.io.min.js';

/**
 * The browser client shipped inside the `socket.io` package itself (`client-dist/`), so it always
 * matches the server's version. Resolved from socket.io's package.json: its `exports` map hides
 * the file from `require.resolve`, and socket.io-client's exports hide its `.min.js` too.
 */
function clientScriptFile(name: string): string {
  return join(dirname(require.resolve('socket.io/package.json')), 'client-dist', name);
}

const ASSETS: Record<string, { file: string; type: string }> = {
  [CLIENT_SCRIPT_PATH]: {
    file: 'socket.io.min.js',
    type: 'application/javascript; charset=utf-8',
  },
  [`${CLIENT_SCRIPT_PATH}.map`]: {
    file: 'socket.io.min.js.map',
    type: 'application/json; charset=utf-8',
  },
};

/** Security headers of the page: only its own nonce'd inline script and style run. */
function pageHeaders(nonce: string): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': [
      "default-src 'none'",
      `script-src 'self' 'nonce-${nonce}'`,
      `style-src 'nonce-${nonce}'`,
      "connect-src 'self'",
      "img-src 'self' data:",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
  };
}

export interface PageRoutesOptions {
  adminKey: string;
  hubId: string;
  sessions: UiSessions;
  /** While it names a problem, `GET /` answers 503 `E_UNAVAILABLE` at once (no session minted). */
  redisProblem: RedisProblemCheck;
}

/** `GET /` (the page, with a fresh UI session in it) and its script, behind the admin key. */
export function registerPageRoutes(app: FastifyInstance, options: PageRoutesOptions): void {
  const cache = new Map<string, Promise<Buffer>>();
  const asset = (file: string): Promise<Buffer> => {
    let content = cache.get(file);
    if (!content) {
      content = readFile(clientScriptFile(file));
      content.catch(() => cache.delete(file));
      cache.set(file, content);
    }
    return content;
  };

  void app.register(async (ui) => {
    ui.addHook('onRequest', requireAdminOrChallenge(options.adminKey));

    ui.get('/', async (request, reply) => {
      // the session is written to Redis: without this, the page waited in ioredis' offline
      // queue for as long as Redis was away
      const problem = await options.redisProblem();
      if (problem !== undefined) throw new AppError('E_UNAVAILABLE', `${problem}; retry later`);
      // HEAD (Fastify answers it with this route) gets no body: no session is written for it
      const session = request.method === 'HEAD' ? NO_SESSION : await options.sessions.mint();
      const nonce = randomBytes(16).toString('base64');
      return reply.headers(pageHeaders(nonce)).send(
        renderAgentsPage({
          session,
          hubId: options.hubId,
          nonce,
          clientScript: CLIENT_SCRIPT_PATH,
        }),
      );
    });

    for (const [path, { file, type }] of Object.entries(ASSETS)) {
      ui.get(path, async (_request, reply) =>
        reply
          .header('content-type', type)
          .header('cache-control', 'private, max-age=3600')
          .header('x-content-type-options', 'nosniff')
          .send(await asset(file)),
      );
    }
  });
}

import { AppError, ERROR_CODES, MAX_MESSAGE_BYTES } from '@agentcom/shared';
import { isUtf8 } from 'node:buffer';
import { STATUS_CODES } from 'node:http';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
} from 'fastify';
import type { Duplex } from 'node:stream';
import type { Logger } from '../logger';
import { requireAdmin } from './admin-auth';
import { createErrorHandler, errorBody } from './errors';
import { registerAgentRoutes } from './routes/agents';
import { registerHealthRoutes, type Readiness } from './routes/health';
import { registerDocsRoutes } from './routes/docs';
import { registerQueueRoutes } from './routes/queues';
import { registerTaskRoutes } from './routes/tasks';
import type { HttpServices } from './services';

export interface HttpAppOptions {
  logger: Logger;
  adminKey: string;
  services: HttpServices;
  readiness: Readiness;
  /** More routes behind the admin key (metrics). */
  extendProtected?: (api: FastifyInstance) => void;
  /** More routes with their own auth (Bull Board, pages). */
  extend?: (app: FastifyInstance) => void;
  /** True once the replica is stopping: every response then asks the client to close. */
  closing?: () => boolean;
  /** Time a request has to arrive whole (`HTTP_REQUEST_TIMEOUT_MS`; {@link REQUEST_TIMEOUT_MS}). */
  requestTimeoutMs?: number;
}

/** The Fastify app: health and docs open, the API, metrics and dashboards behind the admin key. */
export function createHttpApp(options: HttpAppOptions): FastifyInstance {
  const requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: MAX_MESSAGE_BYTES,
    // Fastify turns Node's request timeout off: a client that sent headers and then a body slowly
    // (a byte now and then, or a stalled Expect: 100-continue) held its connection, and whatever
    // it had sent of the body, for ever, with or without the admin key. The whole request must
    // now arrive within this time; Node checks every second (its default: every 30 s), and checks
    // nothing while its headers timeout (60 s by default) is longer than the request timeout.
    requestTimeout: requestTimeoutMs,
    http: { headersTimeout: requestTimeoutMs, connectionsCheckingInterval: 1000 },
    forceCloseConnections: 'idle',
    // Fastify's default limit (100) would refuse a long id before its route's schema could name
    // the schema's limit (ids are up to 128 characters): no shorter than a request line can be
    // (Node's headers limit, 16 KiB), so the route's own validation always answers
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // malformed URLs (bad percent-encoding, ...) answer in the API's error format too
    frameworkErrors: (err, _request, reply) => {
      void (reply as unknown as FastifyReply)
        .status(400)
        .send(errorBody('E_VALIDATION', err.message));
    },
    // a request that is not valid HTTP, or whose headers are too large, too
    clientErrorHandler: answerClientError,
  });
  // A stopping replica's HTTP server only closes once its connections have: a keep-alive client
  // that is never idle (a load balancer's checks, a busy API client) would keep it open for
  // ever, since Node serves the next request on a connection that was busy when it closed.
  const closing = options.closing;
  if (closing) {
    app.addHook('onRequest', (_request, reply, done) => {
      if (closing()) void reply.header('connection', 'close');
      done();
    });
  }
  // JSON bodies must be valid UTF-8: Fastify would silently replace bad bytes with U+FFFD
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer;
    if (!isUtf8(bytes)) {
      done(new AppError('E_VALIDATION', 'the body is not valid UTF-8'), undefined);
      return;
    }
    const text = bytes.toString('utf8');
    void parseJson(request, text, (err, parsed) => {
      // the parser refuses prototype poisoning with the error of a syntax error: valid JSON with
      // such a key is told so
      if (err && isValidJson(text)) {
        done(new AppError('E_VALIDATION', POISONING_MESSAGE), undefined);
        return;
      }
      done(err, parsed);
    });
  });
  app.setErrorHandler(createErrorHandler(options.logger));
  app.setNotFoundHandler((request, reply) => {
    void reply
      .status(404)
      .send(errorBody('E_NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]}`));
  });
  registerHealthRoutes(app, options.readiness);
  registerDocsRoutes(app);
  void app.register(async (api) => {
    api.addHook('onRequest', requireAdmin(options.adminKey));
    registerTaskRoutes(api, options.services);
    registerAgentRoutes(api, options.services);
    registerQueueRoutes(api, options.services);
    options.extendProtected?.(api);
  });
  options.extend?.(app);
  return app;
}

/** Default time a request has to arrive whole, headers and body (2 MiB at 70 KB/s). */
export const REQUEST_TIMEOUT_MS = 30_000;

/** Longest path parameter the router takes (see `routerOptions`). */
const MAX_PARAM_LENGTH = 64 * 1024;

const POISONING_MESSAGE =
  'the body is valid JSON but has a "__proto__" key, or a "constructor" key holding "prototype", ' +
  'which are not allowed (anywhere in the body)';

function isValidJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Node's `clientError`: the request could not be parsed as HTTP (a bad header line, conflicting
 * lengths, headers above Node's limit), so no route or error handler sees it. Fastify's default
 * answers `{"error":"Bad Request","statusCode":400}`; this answers in the API's format, with the
 * status of the code, and closes the connection (nothing after a broken request can be trusted).
 */
function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? (['E_PAYLOAD_TOO_LARGE', 'the request headers are too large'] as const)
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? (['E_VALIDATION', 'the request did not arrive in time'] as const)
        : (['E_VALIDATION', `not a valid HTTP request (${err.code ?? err.message})`] as const);
  const status = ERROR_CODES[code].httpStatus;
  const text = JSON.stringify(errorBody(code, message));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
    );
  }
  socket.destroy();
}

import {
  agentStateSchema,
  ERROR_CODES,
  PROTOCOL_VERSION,
  TASK_STATES,
  cancelTaskBodySchema,
  createAgentBodySchema,
  createTaskBatchBodySchema,
  createTaskBatchResponseSchema,
  createTaskBodySchema,
  createTaskResponseSchema,
  emptyBodySchema,
  listAgentsQuerySchema,
  listTasksQuerySchema,
  taskLogsQuerySchema,
  taskQuerySchema,
  type ErrorCode,
} from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import { z, type ZodType } from 'zod';
import { BULL_BOARD_PATH } from '../bull-board';
import { API_PREFIX } from '../redis-gate';

const jsonSchema = (schema: ZodType, io: 'input' | 'output' = 'input'): unknown =>
  z.toJSONSchema(schema, { io, unrepresentable: 'any' });

/**
 * The error body of one status of one route, its `code` one of `codes` (each of which answers
 * with that status, shared/src/errors/codes.ts).
 */
const errorBodySchema = (codes: readonly ErrorCode[]) => ({
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string', enum: [...codes] },
        message: { type: 'string' },
        details: {},
      },
      required: ['code', 'message'],
      additionalProperties: false,
    },
  },
  required: ['error'],
  additionalProperties: false,
});

/** The error responses of a route, one per status, from the codes it may answer. */
const errorResponses = (codes: readonly ErrorCode[]): Record<string, unknown> => {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = ERROR_CODES[code].httpStatus;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return Object.fromEntries(
    [...byStatus].map(([status, atStatus]) => [
      String(status),
      {
        description: `Error: ${atStatus.map((code) => `\`${code}\``).join(', ')}`,
        content: { 'application/json': { schema: errorBodySchema(atStatus) } },
      },
    ]),
  );
};

const json = (description: string, schema?: ZodType) => ({
  description,
  content: { 'application/json': { schema: schema ? jsonSchema(schema, 'output') : {} } },
});

/** A query's parameters, with a description for those named in `descriptions`. */
const queryParameters = (schema: ZodType, descriptions: Record<string, string> = {}): unknown[] => {
  type Properties = { properties?: Record<string, { default?: unknown }> };
  const described = jsonSchema(schema) as Properties;
  // a parameter parsed from its text (`queryInteger`) has its default in the output schema only
  const parsed = jsonSchema(schema, 'output') as Properties;
  return Object.entries(described.properties ?? {}).map(([name, property]) => {
    const fallback = parsed.properties?.[name]?.default;
    return {
      name,
      in: 'query',
      ...(descriptions[name] ? { description: descriptions[name] } : {}),
      schema: fallback === undefined ? property : { default: fallback, ...property },
    };
  });
};
const idParameter = [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }];
const body = (schema: ZodType) => ({
  content: { 'application/json': { schema: jsonSchema(schema) } },
});

/** Success bodies: what clients rely on (more fields may come; none of these goes away). */
const taskView = z.looseObject({
  id: z.string(),
  queue: z.string(),
  state: z.enum(TASK_STATES),
  attempts: z.number(),
  createdAt: z.number(),
});
const agentView = z.looseObject({
  agentId: z.string(),
  state: agentStateSchema,
  queues: z.array(z.string()),
  /** A drain asked for and not lifted (a busy agent keeps its state until its task ends). */
  drainRequested: z.enum(['operator', 'self']).optional(),
});
const agentState = z.object({ agentId: z.string(), state: agentStateSchema });
const cancelResponse = z.object({
  id: z.string(),
  state: z.enum(TASK_STATES),
  cancelRequested: z.boolean().optional(),
});
const createAgentResponse = z.object({
  agentId: z.string(),
  token: z.string(),
  queues: z.array(z.string()).optional(),
});

type Access = 'open' | 'admin' | 'page';
interface Operation {
  summary: string;
  /** Longer text, when the summary does not say it all. */
  description?: string;
  /** `admin`: the API's 401 without the key; `page`: the same with a Basic challenge. */
  access: Access;
  /** Success responses by status. */
  ok: Record<string, unknown>;
  /** Error codes beyond those every route of its kind may answer. */
  errors?: ErrorCode[];
  /** A path parameter, a query or a body: malformed ones answer 400. */
  input?: boolean;
  parameters?: unknown[];
  requestBody?: unknown;
}

const UNSAFE_METHODS = new Set(['post', 'put', 'patch', 'delete']);

/**
 * One operation with every error it may answer: 401 behind the key, 403 for a change sent from
 * another site with a browser's Basic credentials, 503 for an API route while Redis is away
 * (`redis-gate.ts`), 400 for a malformed path, query or body (or a
 * body that is not JSON), 413 for a body above the limit, 500 from anything unexpected.
 */
function operation(path: string, method: string, spec: Operation): Record<string, unknown> {
  const unsafe = UNSAFE_METHODS.has(method);
  const codes: ErrorCode[] = [...(spec.errors ?? [])];
  if (path.startsWith(API_PREFIX) && !codes.includes('E_UNAVAILABLE')) codes.push('E_UNAVAILABLE');
  if (spec.access !== 'open') codes.push('E_UNAUTHORIZED');
  if (spec.access !== 'open' && unsafe) codes.push('E_FORBIDDEN');
  if (spec.input === true || unsafe) codes.push('E_VALIDATION');
  if (unsafe) codes.push('E_PAYLOAD_TOO_LARGE');
  codes.push('E_INTERNAL');
  return {
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    ...(spec.access === 'open' ? {} : { security: [{ bearer: [] }, { basic: [] }] }),
    ...(spec.parameters ? { parameters: spec.parameters } : {}),
    ...(spec.requestBody ? { requestBody: spec.requestBody } : {}),
    responses: { ...spec.ok, ...errorResponses(codes) },
  };
}

/** What a client of `GET /v1/tasks` may rely on across pages (hub/src/tasks/task-listing.ts). */
const LIST_CURSOR_DESCRIPTION = [
  'Opaque: the `nextCursor` of the previous page, as it was; any other answers 400 `E_VALIDATION`.',
  'It names where the walk stopped (a queue, a job type, the last job read), not an offset: a walk',
  'lists exactly once every task that stays in the listed state throughout, and goes past jobs of',
  'any id length; a task entering or leaving the state meanwhile may or may not be listed.',
  'Exceptions: when the last task listed and the one after it both leave the middle of a list',
  'between two pages (waiting tasks without a priority, assigned and running ones: cancelled, or',
  'finished while older ones run on), the walk starts that list over; when the last task listed',
  'has an id longer than 128 characters and leaves, the walk goes on from the first task of its',
  'state with its score (time or priority) and the same first 32 characters. Either may list',
  'again tasks it listed, and misses none.',
].join(' ');

/** What a client of `GET /v1/agents` may rely on across pages (hub/src/fsm/agent-id-index.ts). */
const AGENTS_CURSOR_DESCRIPTION = [
  'Opaque: the `nextCursor` of the previous page, as it was; any other answers 400 `E_VALIDATION`.',
  'It names the last agent listed, not an offset: a walk lists, in id order, exactly once every',
  'agent present throughout, whatever agents are added or removed meanwhile; one added during',
  'the walk is listed when its id comes after the page read last.',
].join(' ');

/** The description of a route that takes no body (`noBodySchema`). */
const NO_BODY =
  'Takes no body: none, an empty one or `{}`; any other is refused (400 `E_VALIDATION`).';

type Paths = Record<string, Record<string, Operation>>;

const PATHS: Paths = {
  '/v1/tasks': {
    post: {
      summary: 'Create a task',
      access: 'admin',
      requestBody: body(createTaskBodySchema),
      ok: {
        201: json('Created', createTaskResponseSchema),
        200: json('Existing task of the idempotency key', createTaskResponseSchema),
      },
    },
    get: {
      summary: 'List tasks, page by page (go on while there is a nextCursor)',
      access: 'admin',
      input: true,
      parameters: queryParameters(listTasksQuerySchema, { cursor: LIST_CURSOR_DESCRIPTION }),
      ok: {
        200: json(
          'A page',
          z.object({ tasks: z.array(taskView), nextCursor: z.string().optional() }),
        ),
      },
    },
  },
  '/v1/tasks/batch': {
    post: {
      summary: 'Create up to 500 tasks in one request (all validated before any is created)',
      access: 'admin',
      requestBody: body(createTaskBatchBodySchema),
      ok: {
        201: json(
          'Created (entries in request order; duplicates marked)',
          createTaskBatchResponseSchema,
        ),
        200: json(
          'Every task was an existing task of its idempotency key',
          createTaskBatchResponseSchema,
        ),
      },
    },
  },
  '/v1/tasks/{id}': {
    get: {
      summary:
        'Get a task (410 E_TASK_TRIMMED, details {id, state}: finished, no longer kept, its outcome)',
      access: 'admin',
      input: true,
      parameters: [...idParameter, ...queryParameters(taskQuerySchema)],
      errors: ['E_TASK_NOT_FOUND', 'E_TASK_TRIMMED'],
      ok: { 200: json('The task', taskView) },
    },
  },
  '/v1/tasks/{id}/logs': {
    get: {
      summary: 'Task log lines',
      access: 'admin',
      input: true,
      parameters: [...idParameter, ...queryParameters(taskLogsQuerySchema)],
      errors: ['E_TASK_NOT_FOUND'],
      ok: { 200: json('Lines', z.object({ logs: z.array(z.string()), count: z.number() })) },
    },
  },
  '/v1/tasks/{id}/cancel': {
    post: {
      summary: 'Cancel a task (409 once it completed or failed)',
      access: 'admin',
      parameters: [...idParameter, ...queryParameters(taskQuerySchema)],
      requestBody: body(cancelTaskBodySchema),
      errors: ['E_TASK_NOT_FOUND', 'E_INVALID_STATE'],
      ok: {
        200: json('Cancelled', cancelResponse),
        202: json('Its agent was told to stop', cancelResponse),
      },
    },
  },
  '/v1/tasks/{id}/retry': {
    post: {
      summary: 'Retry a failed or cancelled task (409 in any other state)',
      description: NO_BODY,
      access: 'admin',
      parameters: [...idParameter, ...queryParameters(taskQuerySchema)],
      requestBody: body(emptyBodySchema),
      errors: ['E_TASK_NOT_FOUND', 'E_INVALID_STATE'],
      ok: { 200: json('Waiting again', createTaskResponseSchema) },
    },
  },
  '/v1/agents': {
    post: {
      summary: 'Mint an agent token (create or rotate)',
      access: 'admin',
      requestBody: body(createAgentBodySchema),
      ok: {
        201: json('Created', createAgentResponse),
        200: json('Token rotated', createAgentResponse),
      },
    },
    get: {
      summary: 'List agents, page by page in id order (go on while there is a nextCursor)',
      access: 'admin',
      input: true,
      parameters: queryParameters(listAgentsQuerySchema, { cursor: AGENTS_CURSOR_DESCRIPTION }),
      ok: {
        200: json(
          'A page (`nextCursor` only when more agents follow)',
          z.object({ agents: z.array(agentView), nextCursor: z.string().optional() }),
        ),
      },
    },
  },
  '/v1/agents/{id}': {
    get: {
      summary: 'Get an agent',
      access: 'admin',
      input: true,
      parameters: idParameter,
      errors: ['E_AGENT_NOT_FOUND'],
      ok: { 200: json('The agent', agentView) },
    },
    delete: {
      summary: 'Revoke the token and disconnect',
      description: NO_BODY,
      access: 'admin',
      parameters: idParameter,
      requestBody: body(emptyBodySchema),
      errors: ['E_AGENT_NOT_FOUND'],
      ok: { 200: json('Revoked', z.object({ agentId: z.string(), revoked: z.literal(true) })) },
    },
  },
  '/v1/agents/{id}/drain': {
    post: {
      summary: 'Drain: finish the current task, take no new one',
      description: NO_BODY,
      access: 'admin',
      parameters: idParameter,
      requestBody: body(emptyBodySchema),
      errors: ['E_AGENT_NOT_FOUND', 'E_UNAVAILABLE'],
      ok: { 200: json('Its state now', agentState) },
    },
  },
  '/v1/agents/{id}/resume': {
    post: {
      summary: 'Lift a drain; end a rest after ack timeouts',
      description: [
        'Lifts a drain (a draining agent becomes idle) and ends a streak of ack timeouts: the',
        "agent's `missedAcks` is reset, and an agent resting in `cooldown` because of them becomes",
        'idle at once (its next ack timeout rests one ack timeout again). A cooldown the agent',
        'reported itself (a rate limit, `missedAcks` absent) is not ended: the agent said it cannot',
        'take work until then.',
        NO_BODY,
      ].join(' '),
      access: 'admin',
      parameters: idParameter,
      requestBody: body(emptyBodySchema),
      errors: ['E_AGENT_NOT_FOUND', 'E_UNAVAILABLE'],
      ok: { 200: json('Its state now', agentState) },
    },
  },
  '/v1/queues': {
    get: {
      summary: 'Counts and idle agents per queue',
      description: [
        'Every queue tasks were added to and every queue a connected agent serves, in name',
        'order. A queue without tasks counts zeros, and stays listed, with zeros, once its last',
        'agent has gone.',
      ].join(' '),
      access: 'admin',
      ok: {
        200: json(
          'Queues',
          z.object({
            queues: z.array(
              z.looseObject({
                name: z.string(),
                counts: z.record(z.string(), z.number()),
                idleAgents: z.number(),
              }),
            ),
          }),
        ),
      },
    },
  },
  '/metrics': {
    get: {
      summary: 'Prometheus metrics',
      access: 'admin',
      ok: { 200: { description: 'Prometheus text', content: { 'text/plain': {} } } },
    },
  },
  '/healthz': {
    get: {
      summary: 'Liveness',
      access: 'open',
      ok: { 200: json('Alive', z.object({ ok: z.literal(true) })) },
    },
  },
  '/readyz': {
    get: {
      summary: 'Readiness: Redis, adapter, not draining',
      access: 'open',
      ok: {
        200: json('Ready', z.object({ ok: z.literal(true) })),
        503: json('Not ready', z.object({ ok: z.literal(false), problems: z.array(z.string()) })),
      },
    },
  },
  '/docs': {
    get: {
      summary: 'This document, browsable',
      access: 'open',
      ok: { 200: { description: 'HTML', content: { 'text/html': {} } } },
    },
  },
  '/docs/openapi.json': {
    get: { summary: 'This document', access: 'open', ok: { 200: json('OpenAPI 3.1') } },
  },
  '/': {
    get: {
      summary: 'The agents page (a browser asks for the key as the Basic password)',
      description: 'Mints a UI session in Redis: 503 `E_UNAVAILABLE` at once while Redis is away.',
      access: 'page',
      ok: { 200: { description: 'HTML', content: { 'text/html': {} } } },
      errors: ['E_UNAVAILABLE'],
    },
  },
  '/ui/socket.io.min.js': {
    get: {
      summary: "The agents page's Socket.IO client",
      access: 'page',
      ok: { 200: { description: 'JavaScript', content: { 'application/javascript': {} } } },
    },
  },
  '/ui/socket.io.min.js.map': {
    get: {
      summary: 'Its source map',
      access: 'page',
      ok: { 200: json('Source map') },
    },
  },
  [BULL_BOARD_PATH]: {
    get: {
      summary: `Bull Board (its own routes under ${BULL_BOARD_PATH}/, behind the key too, answer in its own format)`,
      access: 'page',
      ok: { 200: { description: 'HTML', content: { 'text/html': {} } } },
    },
  },
};

/** The OpenAPI document, generated from the same zod schemas the routes validate with. */
export function openApiDocument(): unknown {
  return {
    openapi: '3.1.0',
    info: {
      title: 'agentcom hub API',
      version: '1',
      description: [
        `Sidecar protocol version ${PROTOCOL_VERSION}: see docs/protocol.md.`,
        'Every error is `{error: {code, message, details?}}` with a code of shared/src/errors/codes.ts;',
        'a path or method without a route answers 404 `E_NOT_FOUND`, a request that is not valid HTTP 400 `E_VALIDATION`',
        '(headers above the limit: 413 `E_PAYLOAD_TOO_LARGE`).',
      ].join(' '),
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'AGENTCOM_ADMIN_KEY' },
        basic: {
          type: 'http',
          scheme: 'basic',
          description: 'any user, AGENTCOM_ADMIN_KEY as password',
        },
      },
    },
    paths: Object.fromEntries(
      Object.entries(PATHS).map(([path, operations]) => [
        path,
        Object.fromEntries(
          Object.entries(operations).map(([method, spec]) => [
            method,
            operation(path, method, spec),
          ]),
        ),
      ]),
    ),
  };
}

const DOCS_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>agentcom API</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}code,pre{background:#f4f4f4;padding:2px 4px}
.op{border-left:4px solid #3b82f6;padding:.3em 1em;margin:1em 0}.m{font-weight:bold;text-transform:uppercase;margin-right:1em}</style>
</head><body><h1>agentcom hub API</h1><p>Machine-readable: <a href="/docs/openapi.json">/docs/openapi.json</a>.
Every /v1 route needs <code>Authorization: Bearer $AGENTCOM_ADMIN_KEY</code>.</p><div id="ops"></div>
<script>fetch('/docs/openapi.json').then(r=>r.json()).then(doc=>{const root=document.getElementById('ops');
for(const [path,ops] of Object.entries(doc.paths)){for(const [method,op] of Object.entries(ops)){const d=document.createElement('div');d.className='op';
const h=document.createElement('div');const m=document.createElement('span');m.className='m';m.textContent=method;const p=document.createElement('code');p.textContent=path;
h.append(m,p,document.createTextNode(' '+(op.summary||'')));d.append(h);const b=op.requestBody&&op.requestBody.content['application/json'].schema;
if(b){const pre=document.createElement('pre');pre.textContent=JSON.stringify(b,null,2);d.append(pre);}root.append(d);}}});</script></body></html>`;

/** `/docs` (a browsable page) and `/docs/openapi.json`; open, like the schemas themselves. */
export function registerDocsRoutes(app: FastifyInstance): void {
  const document = openApiDocument();
  app.get('/docs/openapi.json', async () => document);
  app.get('/docs', async (_request, reply) =>
    reply.type('text/html; charset=utf-8').send(DOCS_PAGE),
  );
}

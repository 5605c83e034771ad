import {
  PROTOCOL_VERSION,
  cancelTaskBodySchema,
  createAgentBodySchema,
  createTaskBatchBodySchema,
  createTaskBodySchema,
  listTasksQuerySchema,
  taskLogsQuerySchema,
} from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import { z, type ZodType } from 'zod';

const jsonSchema = (schema: ZodType): unknown =>
  z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' });

const errorResponse = {
  description: 'Error: `{error: {code, message, details?}}`, codes in shared/src/errors/codes.ts',
  content: {
    'application/json': {
      schema: {
        type: 'object',
        properties: {
          error: {
            type: 'object',
            properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} },
            required: ['code', 'message'],
          },
        },
      },
    },
  },
};

const queryParameters = (schema: ZodType): unknown[] => {
  const described = jsonSchema(schema) as { properties?: Record<string, unknown> };
  return Object.entries(described.properties ?? {}).map(([name, property]) => ({
    name,
    in: 'query',
    schema: property,
  }));
};
const idParameter = [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }];
const body = (schema: ZodType) => ({
  content: { 'application/json': { schema: jsonSchema(schema) } },
});
const ok = (description: string) => ({ description, content: { 'application/json': {} } });
const op = (summary: string, extra: Record<string, unknown> = {}) => ({
  summary,
  security: [{ bearer: [] }],
  responses: { 200: ok('OK'), default: errorResponse },
  ...extra,
});

/** The OpenAPI document, generated from the same zod schemas the routes validate with. */
export function openApiDocument(): unknown {
  return {
    openapi: '3.1.0',
    info: {
      title: 'agentcom hub API',
      version: '1',
      description: `Sidecar protocol version ${PROTOCOL_VERSION}: see docs/protocol.md`,
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'AGENTCOM_ADMIN_KEY' },
      },
    },
    paths: {
      '/v1/tasks': {
        post: op('Create a task', {
          requestBody: body(createTaskBodySchema),
          responses: {
            201: ok('Created'),
            200: ok('Existing task of the idempotency key'),
            default: errorResponse,
          },
        }),
        get: op('List tasks', { parameters: queryParameters(listTasksQuerySchema) }),
      },
      '/v1/tasks/batch': {
        post: op('Create up to 500 tasks in one request (all validated before any is created)', {
          requestBody: body(createTaskBatchBodySchema),
          responses: {
            201: ok('Created (entries in request order; duplicates marked)'),
            200: ok('Every task was an existing task of its idempotency key'),
            default: errorResponse,
          },
        }),
      },
      '/v1/tasks/{id}': { get: op('Get a task', { parameters: idParameter }) },
      '/v1/tasks/{id}/logs': {
        get: op('Task log lines', {
          parameters: [...idParameter, ...queryParameters(taskLogsQuerySchema)],
        }),
      },
      '/v1/tasks/{id}/cancel': {
        post: op('Cancel a task', {
          parameters: idParameter,
          requestBody: body(cancelTaskBodySchema),
          responses: {
            200: ok('Cancelled'),
            202: ok('Its agent was told to stop'),
            default: errorResponse,
          },
        }),
      },
      '/v1/tasks/{id}/retry': {
        post: op('Retry a failed or cancelled task', { parameters: idParameter }),
      },
      '/v1/agents': {
        post: op('Mint an agent token (create or rotate)', {
          requestBody: body(createAgentBodySchema),
          responses: { 201: ok('Created'), 200: ok('Token rotated'), default: errorResponse },
        }),
        get: op('List agents'),
      },
      '/v1/agents/{id}': {
        get: op('Get an agent', { parameters: idParameter }),
        delete: op('Revoke the token and disconnect', { parameters: idParameter }),
      },
      '/v1/agents/{id}/drain': {
        post: op('Drain: finish the current task, take no new one', { parameters: idParameter }),
      },
      '/v1/agents/{id}/resume': { post: op('Lift a drain', { parameters: idParameter }) },
      '/v1/queues': { get: op('Counts and idle agents per queue') },
      '/metrics': { get: op('Prometheus metrics') },
      '/healthz': { get: { summary: 'Liveness', responses: { 200: ok('Alive') } } },
      '/readyz': {
        get: {
          summary: 'Readiness: Redis, adapter, not draining',
          responses: { 200: ok('Ready'), 503: ok('Not ready') },
        },
      },
    },
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

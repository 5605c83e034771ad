import {
  agentIdSchema,
  taskIdSchema,
  type AgentView,
  type CreateAgentResponse,
  type CreateTaskBody,
  type CreateTaskResponse,
  type ErrorBody,
  type ListAgentsResponse,
  type TaskState,
  type TaskView,
} from '@agentcom/shared';
import type { ZodType } from 'zod';
import { errorText } from '../error-text';
import { ApiError, HubUnreachableError, InterruptedError, UsageError } from './errors';
import type { HubSettings } from './settings';

/**
 * An id as a path segment, checked as the hub checks it before anything is sent: `.` or `..`
 * would be normalized by URL into another route (`task get .` asked `GET /v1/tasks/`).
 */
function idSegment(id: string, schema: ZodType, what: string): string {
  const checked = schema.safeParse(id);
  if (!checked.success) {
    throw new UsageError(
      undefined,
      `${what} ${JSON.stringify(id)}: ${checked.error.issues[0]?.message ?? 'not valid'}`,
    );
  }
  return encodeURIComponent(id);
}
const taskSegment = (id: string): string => idSegment(id, taskIdSchema, 'task id');
const agentSegment = (id: string): string => idSegment(id, agentIdSchema, 'agent id');

/** How long one request may take before the hub counts as unreachable. */
export const REQUEST_TIMEOUT_MS = 30_000;

/** `POST /v1/tasks/:id/cancel`: 200 cancelled, 202 its agent was told to stop. */
export interface CancelResponse {
  id: string;
  state: TaskState;
  cancelRequested?: boolean;
}

export interface TaskListResponse {
  tasks: TaskView[];
  nextCursor?: string;
}

export interface TaskLogsResponse {
  logs: string[];
  count: number;
}

/** One queue of `GET /v1/queues` (hub/src/queues/queue-summary.ts). */
export interface QueueSummary {
  name: string;
  /** BullMQ job counts: waiting, prioritized, delayed, active, completed, failed. */
  counts: Record<string, number>;
  idleAgents: number;
}

export interface AgentStateResponse {
  agentId: string;
  state: string;
}

export interface RevokeResponse {
  agentId: string;
  revoked: boolean;
}

type Query = Record<string, string | number | undefined>;

/**
 * What a successful answer holds at the least, checked before a command reads it: JSON of another
 * shape (another service at the URL, a proxy's own JSON) is no agentcom answer, not a crash.
 */
type Shape = (body: Record<string, unknown>) => boolean;
const isString = (value: unknown): boolean => typeof value === 'string';
const SHAPES = {
  created: (body) => isString(body.id) && isString(body.state),
  task: (body) => isString(body.id) && isString(body.queue) && isString(body.state),
  tasks: (body) => Array.isArray(body.tasks),
  logs: (body) => Array.isArray(body.logs) && typeof body.count === 'number',
  agents: (body) =>
    Array.isArray(body.agents) && (body.nextCursor === undefined || isString(body.nextCursor)),
  agent: (body) => isString(body.agentId) && isString(body.state) && Array.isArray(body.queues),
  token: (body) => isString(body.agentId) && isString(body.token),
  agentState: (body) => isString(body.agentId) && isString(body.state),
  revoked: (body) => isString(body.agentId) && body.revoked === true,
  queues: (body) => Array.isArray(body.queues),
} satisfies Record<string, Shape>;

/**
 * The hub's HTTP API, as the operator CLI uses it (Node's global `fetch`; never Redis). Every
 * method throws {@link ApiError} on an agentcom error answer, {@link HubUnreachableError} when
 * the hub did not answer (or something else did), {@link InterruptedError} on Ctrl-C.
 */
export class HubClient {
  constructor(
    private readonly settings: HubSettings,
    private readonly interrupted: AbortSignal,
    private readonly timeoutMs = REQUEST_TIMEOUT_MS,
  ) {}

  get url(): string {
    return this.settings.url;
  }

  createTask(body: CreateTaskBody): Promise<{ status: number; body: CreateTaskResponse }> {
    return this.request('POST', '/v1/tasks', { body, shape: SHAPES.created });
  }

  /**
   * `timeoutMs`: give up sooner than the usual {@link REQUEST_TIMEOUT_MS} (a wait's deadline).
   * `queue`: the task's queue (an id is unique in its queue only; without it, the hub answers the
   * task of the first queue that holds the id).
   */
  async getTask(
    id: string,
    options: { timeoutMs?: number; queue?: string } = {},
  ): Promise<TaskView> {
    const path = `/v1/tasks/${taskSegment(id)}`;
    const { queue, ...rest } = options;
    const request = { ...rest, query: { queue }, shape: SHAPES.task };
    return (await this.request<TaskView>('GET', path, request)).body;
  }

  async listTasks(query: Query): Promise<TaskListResponse> {
    const shape = SHAPES.tasks;
    return (await this.request<TaskListResponse>('GET', '/v1/tasks', { query, shape })).body;
  }

  async cancelTask(id: string, reason?: string, queue?: string): Promise<CancelResponse> {
    const path = `/v1/tasks/${taskSegment(id)}/cancel`;
    const body = reason === undefined ? {} : { reason };
    const request = { body, query: { queue }, shape: SHAPES.created };
    return (await this.request<CancelResponse>('POST', path, request)).body;
  }

  async retryTask(id: string, queue?: string): Promise<CreateTaskResponse> {
    const path = `/v1/tasks/${taskSegment(id)}/retry`;
    const request = { query: { queue }, shape: SHAPES.created };
    return (await this.request<CreateTaskResponse>('POST', path, request)).body;
  }

  async taskLogs(id: string, query: Query): Promise<TaskLogsResponse> {
    const path = `/v1/tasks/${taskSegment(id)}/logs`;
    return (await this.request<TaskLogsResponse>('GET', path, { query, shape: SHAPES.logs })).body;
  }

  /**
   * One page of agents, in id order; go on with its `nextCursor` while there is one. A hub from
   * before pages answers every agent, without one, whatever the query.
   */
  async listAgents(query: { limit?: number; cursor?: string } = {}): Promise<ListAgentsResponse> {
    const shape = SHAPES.agents;
    return (await this.request<ListAgentsResponse>('GET', '/v1/agents', { query, shape })).body;
  }

  async getAgent(id: string): Promise<AgentView> {
    const path = `/v1/agents/${agentSegment(id)}`;
    return (await this.request<AgentView>('GET', path, { shape: SHAPES.agent })).body;
  }

  createAgentToken(
    agentId: string,
    queues: string[] | undefined,
  ): Promise<{ status: number; body: CreateAgentResponse }> {
    return this.request('POST', '/v1/agents', {
      body: { agentId, ...(queues !== undefined && queues.length > 0 ? { queues } : {}) },
      shape: SHAPES.token,
    });
  }

  async revokeAgent(id: string): Promise<RevokeResponse> {
    const path = `/v1/agents/${agentSegment(id)}`;
    return (await this.request<RevokeResponse>('DELETE', path, { shape: SHAPES.revoked })).body;
  }

  async drainAgent(id: string): Promise<AgentStateResponse> {
    const path = `/v1/agents/${agentSegment(id)}/drain`;
    return (await this.request<AgentStateResponse>('POST', path, { shape: SHAPES.agentState }))
      .body;
  }

  async resumeAgent(id: string): Promise<AgentStateResponse> {
    const path = `/v1/agents/${agentSegment(id)}/resume`;
    return (await this.request<AgentStateResponse>('POST', path, { shape: SHAPES.agentState }))
      .body;
  }

  async listQueues(): Promise<QueueSummary[]> {
    const shape = SHAPES.queues;
    return (await this.request<{ queues: QueueSummary[] }>('GET', '/v1/queues', { shape })).body
      .queues;
  }

  /**
   * One JSON request. A successful answer must be a JSON object (of `shape`, when given): it is
   * then taken as the hub's own type. `timeoutMs` shortens the client's timeout (never lengthens
   * it).
   */
  async request<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    options: { body?: unknown; query?: Query; timeoutMs?: number; shape?: Shape } = {},
  ): Promise<{ status: number; body: T }> {
    if (this.interrupted.aborted) throw new InterruptedError();
    const target = `${this.settings.url}${path}${queryString(options.query)}`;
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.settings.adminKey}`,
      accept: 'application/json',
    };
    // Fastify refuses a JSON content type with an empty body: send it only with one.
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    const controller = new AbortController();
    const timeoutMs = Math.max(0, Math.min(this.timeoutMs, options.timeoutMs ?? Infinity));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onInterrupt = (): void => controller.abort();
    this.interrupted.addEventListener('abort', onInterrupt, { once: true });
    let status: number;
    let statusText: string;
    let text: string;
    try {
      const response = await fetch(target, {
        method,
        headers,
        signal: controller.signal,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      });
      status = response.status;
      statusText = response.statusText;
      text = await response.text();
    } catch (err) {
      if (this.interrupted.aborted) throw new InterruptedError();
      if (timedOut) {
        throw new HubUnreachableError(
          `no answer from the hub at ${this.settings.url} within ${Math.round(timeoutMs / 100) / 10} s (${method} ${path})`,
        );
      }
      throw new HubUnreachableError(
        `cannot reach the hub at ${this.settings.url}: ${describeFetchError(err)}`,
      );
    } finally {
      clearTimeout(timer);
      this.interrupted.removeEventListener('abort', onInterrupt);
    }
    const body = parseJson(text);
    if (status >= 200 && status < 300) {
      if (body === undefined) {
        throw new HubUnreachableError(
          `the server at ${this.settings.url} answered ${method} ${path} with something other than JSON: is it an agentcom hub?`,
        );
      }
      if (!isRecord(body) || (options.shape !== undefined && !options.shape(body))) {
        throw new HubUnreachableError(
          `the server at ${this.settings.url} answered ${method} ${path} with JSON that is not the hub's answer to it: is it an agentcom hub?`,
        );
      }
      return { status, body: body as T };
    }
    if (isErrorBody(body)) throw new ApiError(status, body);
    throw new HubUnreachableError(
      `the server at ${this.settings.url} answered ${method} ${path} with HTTP ${status}${statusText ? ` ${statusText}` : ''}, not an agentcom error: is it an agentcom hub?`,
    );
  }
}

function queryString(query: Query | undefined): string {
  if (query === undefined) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined) params.set(key, String(value));
  }
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== 'object' || value === null || !('error' in value)) return false;
  const error = (value as { error: unknown }).error;
  return (
    typeof error === 'object' &&
    error !== null &&
    typeof (error as { code?: unknown }).code === 'string' &&
    typeof (error as { message?: unknown }).message === 'string'
  );
}

/** `fetch failed` says nothing: the cause holds the errno (`ECONNREFUSED`, `ENOTFOUND`, ...). */
function describeFetchError(err: unknown): string {
  if (err instanceof Error && err.cause !== undefined) return errorText(err.cause);
  return errorText(err);
}

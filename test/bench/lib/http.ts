import { Agent, request } from 'node:http';
import { ADMIN_KEY } from './util';

/** Keep-alive connections to the hubs (one pool per process). */
const agent = new Agent({ keepAlive: true, maxSockets: 64, keepAliveMsecs: 10_000 });

export interface JsonResponse<T> {
  status: number;
  body: T;
}

/**
 * One JSON request with the admin key over a keep-alive connection. Rejects on network errors
 * and after `timeoutMs`; any HTTP status resolves.
 */
export function requestJson<T = unknown>(
  method: string,
  url: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<JsonResponse<T>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string | number> = { authorization: `Bearer ${ADMIN_KEY}` };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    const req = request(url, { method, headers, agent, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : {}) as T });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export interface CreatedTask {
  id: string;
  state: string;
}

/** `POST /v1/tasks` with a no-op payload; returns the id, throws unless 201. */
export async function createTask(hubUrl: string, payload: unknown = {}): Promise<CreatedTask> {
  const res = await requestJson<CreatedTask>('POST', `${hubUrl}/v1/tasks`, { payload });
  if (res.status !== 201) throw new Error(`POST /v1/tasks answered ${res.status}`);
  return res.body;
}

/** `POST /v1/agents {agentId}`: mints (or rotates) the agent's token. */
export async function mintToken(hubUrl: string, agentId: string): Promise<string> {
  const res = await requestJson<{ token?: string }>('POST', `${hubUrl}/v1/agents`, { agentId });
  if (res.status >= 300 || !res.body.token) {
    throw new Error(`POST /v1/agents ${agentId} answered ${res.status}`);
  }
  return res.body.token;
}

export interface TaskView {
  id: string;
  state: string;
  agentId?: string;
}

export async function getTask(hubUrl: string, id: string): Promise<TaskView | undefined> {
  const res = await requestJson<TaskView>('GET', `${hubUrl}/v1/tasks/${id}`);
  return res.status === 200 ? res.body : undefined;
}

export interface QueueSummary {
  name: string;
  counts: Record<string, number>;
  idleAgents: number;
}

export async function getQueues(hubUrl: string): Promise<QueueSummary[]> {
  const res = await requestJson<{ queues?: QueueSummary[] } | QueueSummary[]>(
    'GET',
    `${hubUrl}/v1/queues`,
  );
  if (res.status !== 200) throw new Error(`GET /v1/queues answered ${res.status}`);
  return Array.isArray(res.body) ? res.body : (res.body.queues ?? []);
}

import {
  AppError,
  agentParamsSchema,
  createAgentBodySchema,
  listAgentsQuerySchema,
  type CreateAgentResponse,
  type ListAgentsResponse,
} from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import { hashToken, mintAgentToken } from '../../auth/tokens';
import { toAgentView } from '../../fsm/agent-record';
import { takeNoBody } from '../sent-body';
import type { HttpServices } from '../services';
import { parseOrThrow } from '../validate';

export function registerAgentRoutes(app: FastifyInstance, services: HttpServices): void {
  const { agents, control } = services;

  /**
   * Mints a token for the agent (creating it, or rotating its token: the connection made with the
   * old one is closed). The token is shown once.
   */
  app.post('/v1/agents', async (request, reply) => {
    const body = parseOrThrow(createAgentBodySchema, request.body, 'body');
    const token = mintAgentToken();
    const created = await agents.register(body.agentId, hashToken(token), body.queues);
    if (!created) control.tokenReplaced(body.agentId);
    const response: CreateAgentResponse = { agentId: body.agentId, token };
    if (body.queues) response.queues = body.queues;
    return reply.status(created ? 201 : 200).send(response);
  });

  /** A page of agents in id order (`nextCursor`: the last id listed, while more follow). */
  app.get('/v1/agents', async (request) => {
    const { limit, cursor } = parseOrThrow(listAgentsQuerySchema, request.query, 'query');
    const page = await agents.listPage(cursor, limit);
    const response: ListAgentsResponse = { agents: page.records.map(toAgentView) };
    if (page.nextAfter !== undefined) response.nextCursor = page.nextAfter;
    return response;
  });

  app.get('/v1/agents/:id', async (request) => {
    const { id } = parseOrThrow(agentParamsSchema, request.params, 'path');
    const record = await agents.get(id);
    if (!record) throw new AppError('E_AGENT_NOT_FOUND', `No agent ${id}`);
    return toAgentView(record);
  });

  /** Revokes the token and disconnects the agent on every replica. */
  app.delete('/v1/agents/:id', async (request) => {
    const { id } = parseOrThrow(agentParamsSchema, request.params, 'path');
    takeNoBody(request);
    await control.revoke(id);
    return { agentId: id, revoked: true };
  });

  app.post('/v1/agents/:id/drain', async (request) => {
    const { id } = parseOrThrow(agentParamsSchema, request.params, 'path');
    takeNoBody(request);
    return { agentId: id, state: await control.drain(id) };
  });

  app.post('/v1/agents/:id/resume', async (request) => {
    const { id } = parseOrThrow(agentParamsSchema, request.params, 'path');
    takeNoBody(request);
    return { agentId: id, state: await control.undrain(id) };
  });
}

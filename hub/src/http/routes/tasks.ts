import {
  cancelTaskBodySchema,
  createTaskBatchBodySchema,
  createTaskBodySchema,
  listTasksQuerySchema,
  taskLogsQuerySchema,
  taskParamsSchema,
  taskQuerySchema,
} from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import { sentBody, takeNoBody } from '../sent-body';
import type { HttpServices } from '../services';
import { parseOrThrow } from '../validate';

export function registerTaskRoutes(app: FastifyInstance, services: HttpServices): void {
  const { tasks, cancellation } = services;

  app.post('/v1/tasks', async (request, reply) => {
    const input = parseOrThrow(createTaskBodySchema, request.body, 'body');
    const created = await tasks.create(input);
    return reply.status(created.duplicate ? 200 : 201).send(created);
  });

  /** Every task is validated before any is created; 200 when every one was a duplicate. */
  app.post('/v1/tasks/batch', async (request, reply) => {
    const input = parseOrThrow(createTaskBatchBodySchema, request.body, 'body');
    const created = await tasks.createMany(input.tasks);
    const fresh = created.some((task) => !task.duplicate);
    return reply.status(fresh ? 201 : 200).send({ tasks: created });
  });

  app.get('/v1/tasks', async (request) => {
    const query = parseOrThrow(listTasksQuerySchema, request.query, 'query');
    return services.listTasks(query);
  });

  app.get('/v1/tasks/:id', async (request) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    const { queue } = parseOrThrow(taskQuerySchema, request.query, 'query');
    return tasks.getOrThrow(id, queue);
  });

  app.get('/v1/tasks/:id/logs', async (request) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    const { start, limit, queue } = parseOrThrow(taskLogsQuerySchema, request.query, 'query');
    return tasks.logs(id, start, limit, queue);
  });

  /** 200 when the task is cancelled; 202 when it was running and its agent was told to stop. */
  app.post('/v1/tasks/:id/cancel', async (request, reply) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    const { queue } = parseOrThrow(taskQuerySchema, request.query, 'query');
    const body = parseOrThrow(cancelTaskBodySchema, sentBody(request) ?? {}, 'body');
    const outcome = await cancellation.cancel(id, body.reason, queue);
    return reply.status(outcome.cancelRequested ? 202 : 200).send(outcome);
  });

  /** Takes no body: one with anything in it is refused, not ignored (it would mean nothing). */
  app.post('/v1/tasks/:id/retry', async (request) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    const { queue } = parseOrThrow(taskQuerySchema, request.query, 'query');
    takeNoBody(request);
    return tasks.retry(id, queue);
  });
}

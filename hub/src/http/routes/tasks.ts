import { cancelTaskBodySchema, createTaskBodySchema, taskParamsSchema } from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import type { TaskCancellation } from '../../tasks/task-cancellation';
import type { TaskService } from '../../tasks/task-service';
import { parseOrThrow } from '../validate';

export function registerTaskRoutes(
  app: FastifyInstance,
  tasks: TaskService,
  cancellation: TaskCancellation,
): void {
  app.post('/v1/tasks', async (request, reply) => {
    const input = parseOrThrow(createTaskBodySchema, request.body, 'body');
    const created = await tasks.create(input);
    return reply.status(created.duplicate ? 200 : 201).send(created);
  });

  app.get('/v1/tasks/:id', async (request) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    return tasks.getOrThrow(id);
  });

  /** 200 when the task is cancelled; 202 when it was running and its agent was told to stop. */
  app.post('/v1/tasks/:id/cancel', async (request, reply) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    const body = parseOrThrow(cancelTaskBodySchema, request.body ?? {}, 'body');
    const outcome = await cancellation.cancel(id, body.reason);
    return reply.status(outcome.cancelRequested ? 202 : 200).send(outcome);
  });
}

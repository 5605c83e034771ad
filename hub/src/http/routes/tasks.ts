import { createTaskBodySchema, taskParamsSchema } from '@agentcom/shared';
import type { FastifyInstance } from 'fastify';
import type { TaskService } from '../../tasks/task-service';
import { parseOrThrow } from '../validate';

export function registerTaskRoutes(app: FastifyInstance, tasks: TaskService): void {
  app.post('/v1/tasks', async (request, reply) => {
    const input = parseOrThrow(createTaskBodySchema, request.body, 'body');
    const created = await tasks.create(input);
    return reply.status(created.duplicate ? 200 : 201).send(created);
  });

  app.get('/v1/tasks/:id', async (request) => {
    const { id } = parseOrThrow(taskParamsSchema, request.params, 'path');
    return tasks.getOrThrow(id);
  });
}

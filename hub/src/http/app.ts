import { MAX_MESSAGE_BYTES } from '@agentcom/shared';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { AgentStore } from '../fsm/agent-store';
import type { Logger } from '../logger';
import type { TaskCancellation } from '../tasks/task-cancellation';
import type { TaskService } from '../tasks/task-service';
import { requireAdmin } from './admin-auth';
import { createErrorHandler, errorBody } from './errors';
import { registerAgentRoutes } from './routes/agents';
import { registerHealthRoutes, type Readiness } from './routes/health';
import { registerTaskRoutes } from './routes/tasks';

export interface HttpAppOptions {
  logger: Logger;
  adminKey: string;
  tasks: TaskService;
  cancellation: TaskCancellation;
  agents: AgentStore;
  readiness: Readiness;
}

/** The Fastify app: health routes open, everything under /v1 behind the admin key. */
export function createHttpApp(options: HttpAppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: MAX_MESSAGE_BYTES,
    forceCloseConnections: 'idle',
  });
  app.setErrorHandler(createErrorHandler(options.logger));
  app.setNotFoundHandler((request, reply) => {
    void reply
      .status(404)
      .send(errorBody('E_NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]}`));
  });
  registerHealthRoutes(app, options.readiness);
  void app.register(async (api) => {
    api.addHook('onRequest', requireAdmin(options.adminKey));
    registerTaskRoutes(api, options.tasks, options.cancellation);
    registerAgentRoutes(api, options.agents);
  });
  return app;
}

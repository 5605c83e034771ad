import type { ListTasksQuery, TaskView } from '@agentcom/shared';
import type { AgentControl } from '../agents/agent-control';
import type { AgentStore } from '../fsm/agent-store';
import type { QueueSummary } from '../queues/queue-summary';
import type { TaskCancellation } from '../tasks/task-cancellation';
import type { TaskService } from '../tasks/task-service';

/** What the HTTP routes call; built by the composition root. */
export interface HttpServices {
  tasks: TaskService;
  cancellation: TaskCancellation;
  agents: AgentStore;
  control: AgentControl;
  listTasks(query: ListTasksQuery): Promise<{ tasks: TaskView[]; nextCursor?: string }>;
  summarizeQueues(): Promise<QueueSummary[]>;
}

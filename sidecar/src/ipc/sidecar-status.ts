import type { SidecarConfig } from '../config';
import type { HubConnection } from '../connection/hub-connection';
import type { Outbox } from '../outbox/outbox';
import type { TaskController } from '../task/task-controller';
import { SIDECAR_VERSION } from '../version';
import type { SidecarStatus } from './ipc-protocol';

export interface StatusParts {
  config: Pick<SidecarConfig, 'agentId' | 'runner' | 'stateDir'>;
  connection: Pick<HubConnection, 'state' | 'url'>;
  controller: Pick<TaskController, 'lastHeartbeatAck' | 'currentTask' | 'isDraining'>;
  outbox: Pick<Outbox, 'reports'>;
}

/**
 * What `agentcom-sidecar status` shows, read from the live parts when asked. Ages are whole
 * seconds; what is not known (no heartbeat answered yet, a hub that does not name its replica) is
 * `null`.
 */
export function statusReporter(parts: StatusParts): () => SidecarStatus {
  const startedAt = Date.now();
  return () => {
    const { config, connection, controller, outbox } = parts;
    const now = Date.now();
    const seconds = (since: number): number => Math.max(0, Math.floor((now - since) / 1000));
    const link = connection.state;
    const seen = controller.lastHeartbeatAck();
    const task = controller.currentTask();
    return {
      agentId: config.agentId,
      mode: config.runner.kind,
      connection: link.state,
      connectionAgeSec: seconds(link.since),
      hubUrl: connection.url,
      hubReplica: seen?.hubId ?? null,
      agentState: seen?.state ?? null,
      agentStateAgeSec: seen === undefined ? null : seconds(seen.at),
      task:
        task === undefined
          ? null
          : { id: task.taskId, attempt: task.attempt, ageSec: seconds(task.since) },
      outbox: outbox.reports.length,
      draining: controller.isDraining,
      pid: process.pid,
      uptimeSec: seconds(startedAt),
      version: SIDECAR_VERSION,
      stateDir: config.stateDir,
    };
  };
}

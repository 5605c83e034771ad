import {
  AGENT_NAMESPACE,
  PROTOCOL_VERSION,
  type Ack,
  type ClientToServerEvents,
  type ServerToClientEvents,
  type TaskAssign,
} from '@agentcom/shared';
import { io, type Socket } from 'socket.io-client';

/**
 * A simulated agent for load scenarios: the real protocol over a real socket.io-client, answering
 * every assignment at once with accept + complete `{taskId, value}` (value from the payload), the
 * result a handler would produce. Many of them fit in one process, unlike sidecar processes.
 */
export class AutoAgent {
  readonly socket: Socket<ServerToClientEvents, ClientToServerEvents>;
  completed = 0;
  failedReports = 0;

  constructor(hubUrl: string, agentId: string, token: string, queues: string[] = ['default']) {
    this.socket = io(`${hubUrl}${AGENT_NAMESPACE}`, {
      transports: ['websocket'],
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 1000,
      auth: { agentId, token, protocol: PROTOCOL_VERSION, queues, sidecarVersion: 'auto-agent' },
    });
    this.socket.on('task:assign', (msg) => void this.run(msg));
  }

  connected(): Promise<void> {
    if (this.socket.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('connect_error', reject);
    });
  }

  private async run(msg: TaskAssign): Promise<void> {
    const { id } = msg.task;
    const payload = msg.task.payload as { value?: number } | null;
    try {
      const accepted = (await this.socket
        .timeout(10_000)
        .emitWithAck('task:accept', { taskId: id, token: msg.token })) as Ack;
      if (!accepted.ok) return;
      const ack = (await this.socket.timeout(10_000).emitWithAck('task:complete', {
        taskId: id,
        token: msg.token,
        result: { taskId: id, value: payload?.value ?? null },
      })) as Ack;
      if (ack.ok) this.completed++;
      else this.failedReports++;
    } catch {
      this.failedReports++;
    }
  }

  close(): void {
    this.socket.disconnect();
  }
}

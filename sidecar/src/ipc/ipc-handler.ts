import type { DaemonEmitter } from '../daemon-events';
import type { Logger } from '../logger';
import type { AgentReport, WakeRunner } from '../runner/wake-runner';
import {
  ipcRequestSchema,
  type IpcRequest,
  type IpcResponse,
  type SidecarStatus,
} from './ipc-protocol';
import type { IpcHandler } from './ipc-server';

export interface IpcHandlerOptions {
  /** A snapshot for `status`. */
  status: () => SidecarStatus;
  /** The wake runner; undefined in exec mode, where `done` / `fail` are refused. */
  wake: WakeRunner | undefined;
  /** The daemon's events: a report is answered once its task `finished` (report in the outbox). */
  events: DaemonEmitter;
  /** Bound on the wait for the report to be stored. */
  storeTimeoutMs: number;
  logger: Logger;
}

/**
 * The daemon's side of the local commands. `done` / `fail` end the wake task in hand; they are
 * answered once the report is durably in the outbox (or dropped, if the hub took the task back
 * meanwhile), so a `done` that exited 0 never loses its result.
 */
export function createIpcHandler(options: IpcHandlerOptions): IpcHandler {
  return async (raw) => {
    const parsed = ipcRequestSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where =
        issue === undefined || issue.path.length === 0 ? '' : `${issue.path.join('.')}: `;
      return {
        ok: false,
        code: 'E_BAD_REQUEST',
        message: `${where}${issue?.message ?? 'invalid request'}`,
      };
    }
    const request = parsed.data;
    if (request.type === 'status') return { ok: true, status: options.status() };
    return report(options, request);
  };
}

async function report(
  options: IpcHandlerOptions,
  request: Exclude<IpcRequest, { type: 'status' }>,
): Promise<IpcResponse> {
  const { wake, events, logger } = options;
  if (wake === undefined) {
    return {
      ok: false,
      code: 'E_NOT_WAKE_MODE',
      message: `not in wake mode: this sidecar runs its --exec command per task, whose exit reports it`,
    };
  }
  const agentReport: AgentReport =
    request.type === 'done'
      ? { type: 'complete', result: request.result ?? null }
      : {
          type: 'fail',
          reason: request.reason,
          retryable: request.retryable,
          // kept as an end on this machine's clock (the report may wait for a reconnect), and
          // sent as what is left of it at each send (the hub's clock is not this one)
          ...(request.retryAfterSeconds !== undefined && {
            rateLimitedUntil: Math.ceil(Date.now() + request.retryAfterSeconds * 1000),
          }),
        };
  const inHand = wake.inHand();
  const stored = inHand === undefined ? undefined : taskEnded(events, inHand.taskId);
  const taken = wake.report(agentReport, request.taskId, request.run);
  if (!taken.ok) {
    stored?.cancel();
    return { ok: false, code: taken.code, message: taken.message };
  }
  const outcome = await stored?.wait(options.storeTimeoutMs);
  if (outcome === 'timeout') {
    logger.warn(
      { taskId: taken.taskId },
      'the report was taken but is not in the outbox yet; answering the local command anyway',
    );
  }
  return { ok: true, taskId: taken.taskId };
}

/** Resolves when the controller stored (`finished`) or dropped the task; cancellable. */
function taskEnded(
  events: DaemonEmitter,
  taskId: string,
): { wait(timeoutMs: number): Promise<'ended' | 'timeout'>; cancel(): void } {
  let resolveEnded: () => void = () => undefined;
  const ended = new Promise<void>((resolve) => {
    resolveEnded = resolve;
  });
  const onEnd = (event: { taskId: string }): void => {
    if (event.taskId === taskId) resolveEnded();
  };
  events.on('finished', onEnd);
  events.on('dropped', onEnd);
  const cancel = (): void => {
    events.off('finished', onEnd);
    events.off('dropped', onEnd);
  };
  return {
    cancel,
    wait: async (timeoutMs) => {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      try {
        return await Promise.race([ended.then(() => 'ended' as const), timedOut]);
      } finally {
        clearTimeout(timer);
        cancel();
      }
    },
  };
}

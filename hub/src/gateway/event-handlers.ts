import {
  AppError,
  CLIENT_EVENT_SCHEMAS,
  describeZodError,
  isAppError,
  type Ack,
  type AckError,
  type AgentState,
  type ClientEventName,
  type TaskAssign,
  type TaskCancel,
} from '@agentcom/shared';
import type { AssignmentService } from '../dispatch/assignments';
import type { AgentControl, BySelf } from '../agents/agent-control';

/** Context of one authenticated socket. */
export interface HandlerContext {
  agentId: string;
  socketId: string;
  /** This replica's HUB_ID, returned in heartbeat acks. */
  hubId: string;
  /** The hash of the token this connection authenticated with. */
  tokenHash: string;
  /** Closes this connection (the sidecar reconnects and re-announces). */
  dropConnection: () => void;
  /** Sends `hub:error` with this refusal, then closes the connection (after the ack is out). */
  endConnection: (refusal: { code: 'E_UNAUTHORIZED'; message: string }) => void;
  /** False once this connection closed (its disconnect is being recorded). */
  isConnected: () => boolean;
  /** Sends `task:cancel` on this connection. */
  cancelTask: (msg: TaskCancel) => void;
  /** Sends `task:assign` again on this connection (its first push was not received). */
  resendTask: (msg: TaskAssign) => void;
  assignments: AssignmentService;
  control: AgentControl;
}

type Handler = (ctx: HandlerContext, payload: never) => Promise<Ack<object>>;

/**
 * One handler per client event. Payloads arrive already parsed with the event's schema
 * (`CLIENT_EVENT_SCHEMAS`); identity is `ctx.agentId`, from the authenticated socket.
 */
export const EVENT_HANDLERS: { [E in ClientEventName]: Handler } = {
  // each fenced by the connection's token too (`tokenHash`): see `runClientEvent`
  'task:accept': async (ctx, msg: Parameters<AssignmentService['accept']>[1]) => ({
    ok: true,
    ...(await ctx.assignments.accept(ctx.agentId, msg, ctx.isConnected, ctx.tokenHash)),
  }),
  'task:progress': async (ctx, msg: Parameters<AssignmentService['progress']>[1]) => {
    await ctx.assignments.progress(ctx.agentId, msg, ctx.tokenHash);
    return { ok: true };
  },
  'task:log': async (ctx, msg: Parameters<AssignmentService['log']>[1]) => {
    await ctx.assignments.log(ctx.agentId, msg, ctx.tokenHash);
    return { ok: true };
  },
  'task:complete': (ctx, msg: Parameters<AssignmentService['complete']>[1]) =>
    ctx.assignments.complete(ctx.agentId, msg, ctx.tokenHash),
  'task:fail': (ctx, msg: Parameters<AssignmentService['fail']>[1]) =>
    ctx.assignments.fail(ctx.agentId, msg, ctx.tokenHash),
  'agent:heartbeat': async (ctx, msg: { taskId?: string; token?: string }) => {
    const { ack, stale, revoked, cancel, resend } = await ctx.assignments.heartbeat(
      ctx.agentId,
      ctx.socketId,
      ctx.tokenHash,
      msg.taskId,
      msg.token,
    );
    // revoked or replaced, and the message that ends its connections did not come here
    if (revoked && !ack.ok) ctx.endConnection({ code: 'E_UNAUTHORIZED', message: ack.message });
    if (stale) setImmediate(ctx.dropConnection);
    // a pending operator cancel the agent may have missed: sent again, ahead of the ack
    if (cancel) ctx.cancelTask(cancel);
    // an assignment whose push the agent did not receive: sent again, ahead of the ack
    if (resend) ctx.resendTask(resend);
    return ack.ok ? { ...ack, hubId: ctx.hubId } : ack;
  },
  // fenced by the connection's token too, as the task events are (`BySelf`)
  'agent:drain': async (ctx): Promise<Ack<{ state: AgentState }>> => ({
    ok: true,
    state: await ctx.control.drain(ctx.agentId, bySelf(ctx)),
  }),
  'agent:resume': async (ctx): Promise<Ack<{ state: AgentState }>> => ({
    ok: true,
    state: await ctx.control.undrain(ctx.agentId, bySelf(ctx)),
  }),
};

/** The connection an agent's own drain or resume comes from. */
function bySelf(ctx: HandlerContext): BySelf {
  return { socketId: ctx.socketId, tokenHash: ctx.tokenHash };
}

/** A payload checked with its event's schema: the parsed payload, or the `E_VALIDATION` ack. */
export function parseClientEvent(
  event: ClientEventName,
  payload: unknown,
): { ok: true; data: unknown } | AckError {
  const parsed = CLIENT_EVENT_SCHEMAS[event].safeParse(payload);
  if (parsed.success) return { ok: true, data: parsed.data };
  return {
    ok: false,
    code: 'E_VALIDATION',
    message: `${event}: ${describeZodError(parsed.error)}`,
  };
}

/**
 * Runs the handler of a parsed payload; every failure becomes an error ack, never a throw. An
 * `E_UNAUTHORIZED` refusal (the connection's token was rotated or revoked, and the message that
 * closes its connections did not reach this replica: nothing the event asked was applied) also
 * ends the connection, as that message would have.
 */
export async function runClientEvent(
  ctx: HandlerContext,
  event: ClientEventName,
  data: unknown,
  onInternalError: (err: unknown) => void,
): Promise<Ack<object>> {
  try {
    return await EVENT_HANDLERS[event](ctx, data as never);
  } catch (err) {
    if (isAppError(err) && err.code === 'E_UNAUTHORIZED') {
      ctx.endConnection({ code: err.code, message: err.message });
    }
    if (isAppError(err)) return { ok: false, code: err.code, message: err.message };
    onInternalError(err);
    const internal = new AppError('E_INTERNAL');
    return { ok: false, code: internal.code, message: internal.message };
  }
}

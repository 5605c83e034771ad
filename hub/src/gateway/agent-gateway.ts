import {
  AGENT_NAMESPACE,
  AppError,
  CLIENT_EVENTS,
  MAX_EVENTS_IN_FLIGHT,
  isAppError,
  type ClientEventName,
  type HandshakeAuth,
  type HubError,
  type ServerToClientEvents,
} from '@agentcom/shared';
import type { Namespace, Server, Socket } from 'socket.io';
import type { AgentControl } from '../agents/agent-control';
import type { Presence } from '../agents/presence';
import type { AssignmentService } from '../dispatch/assignments';
import type { AgentNotifier } from '../dispatch/notifier';
import type { AgentStore } from '../fsm/agent-store';
import type { Logger } from '../logger';
import { settlesWithin } from '../stop-bounds';
import { authenticateHandshake } from './auth';
import { DisconnectRetries } from './disconnect-retries';
import { hashToken } from '../auth/tokens';
import { clientAddress, type HandshakeLimiter } from './handshake-limiter';
import { parseClientEvent, runClientEvent, type HandlerContext } from './event-handlers';
import {
  FLOOD_REFUSALS,
  FloodCooldown,
  HANDLING_COST,
  RefusalBudget,
  acceptedCost,
  answerCost,
  dropUpgradedConnection,
  floodCooldownMs,
  inFlightRefusalCost,
  refusalCost,
} from './flood-guard';
import { InFlightLimit } from './in-flight-limit';
import { startWork, workMsSince, type WorkMark } from './work-clock';

/** Inbound events as they arrive: untrusted until their schema accepted them. */
type RawClientEvents = { [E in ClientEventName]: (...args: unknown[]) => void };
interface SocketData {
  auth: HandshakeAuth;
  /** The hash of the token the connection authenticated with (never the token over Redis). */
  tokenHash: string;
}

/** The adapter message asking every replica to close an agent's connections of older tokens. */
export const STALE_TOKENS_EVENT = 'agent:close-stale-tokens';
/** Events between replicas (`serverSideEmit`, through the Redis adapter). */
interface ReplicaEvents {
  [STALE_TOKENS_EVENT]: (agentId: string, message: HubError) => void;
}
export type AgentNamespace = Namespace<
  RawClientEvents,
  ServerToClientEvents,
  ReplicaEvents,
  SocketData
>;
type AgentSocket = Socket<RawClientEvents, ServerToClientEvents, ReplicaEvents, SocketData>;
/** Why an event was refused at the boundary (logged when the refusals close the connection). */
type RefusalKind =
  | 'beyond the in-flight limit'
  | 'without an ack'
  | 'not one payload'
  | 'refused by its schema'
  | 'unknown event'
  | 'ack not asked for'
  | 'accepted: its handling and the work of its frame'
  | 'answered with an error: work for nothing';

/** An event frame of a connection: its size, and how long Socket.IO took to decode it. */
interface EventFrame {
  bytes: number;
  decodeMs: number;
}
const NO_FRAME: EventFrame = { bytes: 0, decodeMs: 0 };

export const agentRoom = (agentId: string): string => `agent:${agentId}`;

/**
 * The start of a Socket.IO packet of the agent namespace, as an Engine.IO message carries it: its
 * type (2 event, 3 ack). No binary one gets this far: the decoder refuses it (`text-only-parser.ts`).
 */
const AGENT_PACKET = new RegExp(`^([23])${AGENT_NAMESPACE},`);

/** The refusal of a handshake that reaches a stopping replica. */
const STOPPING_REFUSAL = 'this hub replica is stopping; retry later (another replica takes it)';

export interface AgentGatewayOptions {
  io: Server;
  agents: AgentStore;
  presence: Presence;
  assignments: AssignmentService;
  control: AgentControl;
  logger: Logger;
  /** Called for each payload refused at the boundary (metrics). */
  onRejectedPayload: () => void;
  /** Called for each connection closed for flooding (metrics; see {@link RefusalBudget}). */
  onFloodDisconnect: () => void;
  /** Refusals one connection may get at once before it is closed (`FLOOD_REFUSALS` by default). */
  floodRefusals?: number;
  limiter: HandshakeLimiter;
  hubId: string;
  trustProxy: boolean;
  /**
   * Undefined when Redis answers, else what is wrong (`RedisProbe`): a handshake while Redis is
   * away is refused `E_UNAVAILABLE` at once (the sidecar retries with backoff) instead of waiting
   * in ioredis' offline queue, one more queued check per reconnect attempt of every sidecar.
   */
  redisProblem: () => string | undefined | Promise<string | undefined>;
}

/**
 * The `/agent` namespace: authenticates sidecars, records their presence, routes their events to
 * the services, and reaches any agent through its room (the Redis adapter carries emits to the
 * replica that holds the socket).
 */
export class AgentGateway implements AgentNotifier {
  readonly nsp: AgentNamespace;
  private readonly pendingDisconnects = new Set<Promise<void>>();
  /** Disconnects Redis refused to record, recorded again later. */
  private readonly disconnectRetries: DisconnectRetries;
  /** Connections whose stale heartbeat is being handled (see {@link resync}). */
  private readonly resyncing = new Set<string>();
  /** Agents whose connection was closed for flooding, refused at the handshake for a while. */
  private readonly floodCooldown: FloodCooldown;
  /** Set by {@link drainLocal}: the replica is stopping and takes no new connection. */
  private draining = false;
  constructor(private readonly options: AgentGatewayOptions) {
    this.disconnectRetries = new DisconnectRetries({
      record: (agentId, socketId) => options.presence.disconnect(agentId, socketId),
      logger: options.logger,
    });
    this.floodCooldown = new FloodCooldown(
      floodCooldownMs(options.floodRefusals ?? FLOOD_REFUSALS),
    );
    this.nsp = options.io.of(AGENT_NAMESPACE) as unknown as AgentNamespace;
    this.nsp.use((socket, next) => {
      const address = clientAddress(socket.handshake, options.trustProxy);
      Promise.resolve()
        .then(() => {
          if (this.draining) throw new AppError('E_UNAVAILABLE', STOPPING_REFUSAL);
          this.floodCooldown.check(socket.handshake.auth);
          return options.redisProblem();
        })
        .then((problem) => {
          if (problem !== undefined) throw new AppError('E_UNAVAILABLE', `${problem}; retry later`);
          return options.limiter.run(address, () =>
            authenticateHandshake(socket.handshake.auth, options.agents),
          );
        })
        .then((auth) => {
          socket.data.auth = auth;
          socket.data.tokenHash = hashToken(auth.token);
          next();
        })
        .catch((err: unknown) => {
          const appError = isAppError(err) ? err : new AppError('E_INTERNAL');
          if (!isAppError(err))
            options.logger.error({ err: String(err) }, 'handshake check failed');
          const error = new Error(appError.message) as Error & {
            data: { code: string; message: string };
          };
          error.data = { code: appError.code, message: appError.message };
          next(error);
        });
    });
    this.nsp.on('connection', (socket) => this.onConnection(socket));
    this.nsp.on(
      STALE_TOKENS_EVENT,
      (agentId, message) => void this.closeLocalStaleTokens(agentId, message),
    );
  }

  /**
   * Pushes a task to the connection the agent's record named when it was claimed (`socketId`).
   * When that socket is on this replica the emit stays local: the Redis adapter would publish
   * every emit to all replicas, which decode it to find nobody there. Otherwise it goes to that
   * socket's own room on whichever replica holds it. Not the agent's room: a replica can still
   * hold an older connection of the agent whose replacement (on another replica) has not reached
   * it yet, and a push to that room would stay here, on a closing socket, while the live
   * connection never got it; the agent would then be charged an ack timeout for it.
   */
  assign(
    agentId: string,
    message: Parameters<ServerToClientEvents['task:assign']>[0],
    socketId?: string,
  ): void {
    if (socketId !== undefined) {
      const local = this.nsp.sockets.get(socketId);
      if (local) local.emit('task:assign', message);
      else this.nsp.to(socketId).emit('task:assign', message);
      return;
    }
    const room = agentRoom(agentId);
    if ((this.nsp.adapter.rooms.get(room)?.size ?? 0) > 0) {
      this.nsp.local.to(room).emit('task:assign', message);
    } else {
      this.nsp.to(room).emit('task:assign', message);
    }
  }

  cancel(agentId: string, message: Parameters<ServerToClientEvents['task:cancel']>[0]): void {
    this.nsp.to(agentRoom(agentId)).emit('task:cancel', message);
  }

  /**
   * Closes the agent's connections made with a token that is no longer its record's: those here
   * at once, those of the other replicas when this message reaches them. Each replica that holds
   * a connection of the agent reads the record's token hash as it handles the message. A close of
   * the agent's whole room (what a rotation and a revoke sent before) also cut a connection made
   * with the newest token when it came from an earlier rotation, or reached its replica late.
   */
  closeStaleTokenConnections(agentId: string, message: HubError): void {
    this.nsp.serverSideEmit(STALE_TOKENS_EVENT, agentId, message);
    void this.closeLocalStaleTokens(agentId, message);
  }

  /** Waits (bounded) until the disconnects of closed sockets are recorded in Redis. */
  async settled(timeoutMs: number): Promise<void> {
    await settlesWithin(Promise.allSettled([...this.pendingDisconnects]), timeoutMs);
  }

  /**
   * Drops the retries of disconnects Redis refused to record (a stopping replica): the other
   * replicas record those once this one is gone.
   */
  stop(): void {
    this.disconnectRetries.stop();
  }

  /** Disconnects Redis refused to record that wait for a retry. */
  unrecordedDisconnects(): number {
    return this.disconnectRetries.size();
  }

  /** Number of agent sockets on this replica. */
  localSocketCount(): number {
    return this.nsp.sockets.size;
  }

  /**
   * Asks every sidecar on this replica to reconnect elsewhere, and from now on refuses handshakes
   * `E_UNAVAILABLE` at once: a load balancer that counts connections (`leastconn`, `least_conn`)
   * sends the reconnects to the replica that just lost its agents, this one, until its checks
   * mark it down, and a connection taken here would be cut again when the sockets close. Refused,
   * the sidecar pauses and retries, by then elsewhere. Needs no Redis.
   */
  drainLocal(): void {
    this.draining = true;
    this.nsp.local.emit('hub:draining', {});
  }

  /**
   * This replica's part of {@link closeStaleTokenConnections}. The connections are taken before
   * the record is read: one that joins after the read may hold a token newer than the one read
   * (rotated meanwhile), and that rotation's own message closes what it replaced. One whose
   * handshake passed with an older token and that joins later is refused by its connect, which
   * reads the record again (`Presence.connect`).
   */
  private async closeLocalStaleTokens(agentId: string, message: HubError): Promise<void> {
    const sockets = this.localSocketsOf(agentId);
    if (sockets.length === 0) return; // no read on a replica that holds none of the agent's
    const log = this.options.logger.child({ agentId });
    let currentHash: string | undefined;
    try {
      currentHash = (await this.options.agents.get(agentId))?.tokenHash;
    } catch (err) {
      // which token is current is unknown: each reconnects, and its handshake checks its token
      log.warn(
        { err: String(err) },
        'token replaced, record unreadable: closing to reauthenticate',
      );
      for (const socket of sockets) socket.disconnect(true);
      return;
    }
    for (const socket of sockets) {
      if (!socket.connected || socket.data.tokenHash === currentHash) continue;
      log.info({ socketId: socket.id }, 'connection made with a replaced token: closing it');
      socket.emit('hub:error', message);
      socket.disconnect(true);
    }
  }

  /** The agent's sockets on this replica. */
  private localSocketsOf(agentId: string): AgentSocket[] {
    const ids = this.nsp.adapter.rooms.get(agentRoom(agentId)) ?? new Set<string>();
    return [...ids].flatMap((id) => this.nsp.sockets.get(id) ?? []);
  }

  /**
   * A heartbeat came on a connection the agent's record does not name. When the record is gone
   * (Redis lost its data) the agent is recorded again from this connection; otherwise the
   * connection is closed, so the sidecar reconnects and its presence is recorded again.
   */
  private async resync(socket: AgentSocket, log: Logger): Promise<void> {
    // one at a time per connection: a second stale heartbeat would find the record just restored
    if (this.resyncing.has(socket.id)) return;
    this.resyncing.add(socket.id);
    const { auth } = socket.data;
    const restored = await this.options.presence
      .restore(auth.agentId, socket.id, auth)
      .catch((err: unknown) => {
        log.warn({ err: String(err) }, 'could not record the agent again');
        return false;
      })
      .finally(() => this.resyncing.delete(socket.id));
    if (restored) {
      log.warn('agent record lost by Redis: recorded again from its live connection');
      return;
    }
    log.warn('heartbeat from a connection the record does not know: closing it to resync');
    socket.disconnect(true);
  }

  private onConnection(socket: AgentSocket): void {
    const { presence, logger } = this.options;
    const { auth } = socket.data;
    const agentId = auth.agentId;
    const log = logger.child({ agentId, socketId: socket.id });
    void socket.join(agentRoom(agentId));
    const ctx: HandlerContext = {
      agentId,
      socketId: socket.id,
      hubId: this.options.hubId,
      tokenHash: socket.data.tokenHash,
      dropConnection: () => void this.resync(socket, log),
      endConnection: (refusal) => {
        log.warn({ code: refusal.code }, `${refusal.message}: closing the connection`);
        socket.emit('hub:error', refusal);
        setImmediate(() => socket.disconnect(true));
      },
      isConnected: () => socket.connected,
      cancelTask: (msg) => {
        log.info({ taskId: msg.taskId }, 'a cancel of the task is pending: sending it again');
        socket.emit('task:cancel', msg);
      },
      resendTask: (msg) => {
        log.warn(
          { taskId: msg.task.id },
          'the agent did not receive the push of its task: sending it again',
        );
        socket.emit('task:assign', msg);
      },
      assignments: this.options.assignments,
      control: this.options.control,
    };

    const ready = presence.connect(agentId, socket.id, auth).then(
      (outcome) => {
        log.info({ state: outcome.state, replaced: outcome.replacedSocketId }, 'agent connected');
        if (outcome.replacedSocketId) {
          const old = outcome.replacedSocketId;
          this.nsp.to(old).emit('hub:error', {
            code: 'E_REPLACED',
            message: 'a newer connection of this agent replaced this one',
          });
          this.nsp.in(old).disconnectSockets(true);
        }
        if (outcome.cancel) socket.emit('task:cancel', outcome.cancel);
        return true;
      },
      (err: unknown) => {
        if (isAppError(err)) {
          log.warn({ code: err.code }, `agent connect refused: ${err.message}`);
          socket.emit('hub:error', { code: err.code, message: err.message });
        } else {
          log.error({ err: String(err) }, 'agent connect failed');
          socket.emit('hub:error', { code: 'E_INTERNAL', message: 'connect failed; retry' });
        }
        socket.disconnect(true);
        return false;
      },
    );

    this.routeClientEvents(socket, ctx, ready, log);
    socket.on('disconnect', (reason) => {
      const recorded = ready.then(async (ok) => {
        if (!ok) return;
        log.info({ reason }, 'agent disconnected');
        await presence.disconnect(agentId, socket.id).catch((err: unknown) => {
          log.error({ err: String(err) }, 'recording disconnect failed: trying again later');
          this.disconnectRetries.schedule(agentId, socket.id);
        });
      });
      this.pendingDisconnects.add(recorded);
      void recorded.finally(() => this.pendingDisconnects.delete(recorded));
    });
  }

  /**
   * Answers each client event with an ack: refused at once when {@link MAX_EVENTS_IN_FLIGHT}
   * events of this connection are still being handled (`E_RATE_LIMITED`, checked first: the
   * excess of an agent that does not wait for its acks costs no schema check, no Redis work and
   * holds no memory), when it has no single payload, or when its schema refuses it; otherwise
   * handled once the connection's presence is recorded. An event without an ack callback is
   * dropped, and so is one whose name is no client event (answered `E_VALIDATION` when it carries
   * an ack).
   *
   * Each of these refusals spends the connection's one {@link RefusalBudget}, whatever its kind
   * (a sidecar never sends any but the in-flight excess, and that only during a long Redis
   * stall); a connection that spends it is closed ({@link closeFlooder}). An event that reached
   * its handler spends its handling and the work of its frame: a fixed part, its size, and the
   * time its decoding and schema check took (`acceptedCost`), checked before its handler runs;
   * and one more once answered with an error of the agent's making (`answerCost`). A packet the
   * decoder refuses (binary, malformed) closes the connection at once.
   */
  private routeClientEvents(
    socket: AgentSocket,
    ctx: HandlerContext,
    ready: Promise<boolean>,
    log: Logger,
  ): void {
    const inFlight = new InFlightLimit(MAX_EVENTS_IN_FLIGHT);
    const budget = new RefusalBudget(this.options.floodRefusals);
    /** Spends `count` of the budget; false once it is spent and the connection closed. */
    const charge = (event: unknown, kind: RefusalKind, count: number): boolean => {
      if (budget.spend(performance.now(), count)) return true;
      this.closeFlooder(socket, budget, { event, kind }, log);
      return false;
    };
    const refused = (event: unknown, kind: RefusalKind, bytes = 0): void =>
      void charge(event, kind, refusalCost(bytes));
    // Each event frame of this connection, in the order Socket.IO hands the events over: `onAny`
    // takes every one, then the event's listener. A binary message never gets to them: the
    // decoder refuses it and Socket.IO closes the connection (see `socket.on('error')`).
    const frames: EventFrame[] = [];
    const listenerFrames: EventFrame[] = [];
    let decoding: { bytes: number; since: WorkMark } | undefined;
    const onPacket = (packet: { type: string; data?: unknown }): void => {
      if (packet.type !== 'message' || typeof packet.data !== 'string') return;
      const { data } = packet;
      const type = AGENT_PACKET.exec(data)?.[1];
      if (type === '2') decoding = { bytes: data.length, since: startWork(data.length) };
      // this replica never asks an agent for an ack: Socket.IO drops one unseen, after decoding it
      else if (type === '3') {
        this.options.onRejectedPayload();
        refused('(ack)', 'ack not asked for', data.length);
      }
    };
    // Engine.IO emits `message` right after `data`, whose listener is Socket.IO's decoder: the
    // time since `packet` is this frame's decoding alone (the event reaches `onAny` a tick later,
    // after the other frames of the same read are decoded).
    const onDecoded = (): void => {
      if (decoding === undefined) return;
      frames.push({ bytes: decoding.bytes, decodeMs: workMsSince(decoding.since) });
      decoding = undefined;
    };
    socket.conn.on('packet', onPacket);
    socket.conn.on('message', onDecoded);
    socket.once('disconnect', () => {
      socket.conn.off('packet', onPacket);
      socket.conn.off('message', onDecoded);
    });
    // The decoder refused a packet and Socket.IO has closed the connection: its TCP one goes too,
    // should the client not answer. Not an event a client named `error` (its argument is JSON,
    // never an Error): that one is an unknown event, refused below.
    socket.on('error', (err: unknown) => {
      if (!(err instanceof Error)) return;
      this.options.onRejectedPayload();
      log.warn({ err: err.message }, 'packet refused by the decoder: connection closed');
      dropUpgradedConnection(socket.request);
    });
    let warnedInFlight = false;
    for (const event of CLIENT_EVENTS) {
      socket.on(event, (...args: unknown[]) => {
        const frame = listenerFrames.shift() ?? NO_FRAME;
        const { bytes } = frame;
        const ack = args.at(-1);
        if (typeof ack !== 'function') {
          this.options.onRejectedPayload();
          refused(event, 'without an ack', bytes);
          return;
        }
        const reply = ack as (response: unknown) => void;
        if (!inFlight.take()) {
          if (!warnedInFlight)
            log.warn({ event }, 'too many events in flight: refusing the excess');
          warnedInFlight = true;
          reply({
            ok: false,
            code: 'E_RATE_LIMITED',
            message: `${event}: ${inFlight.max} events of this connection are being handled; wait for their acks`,
          });
          void charge(
            event,
            'beyond the in-flight limit',
            inFlightRefusalCost(bytes, frame.decodeMs, budget.burst),
          );
          return;
        }
        const checking = startWork(bytes);
        const parsed = this.parsePayload(event, args);
        const workMs = frame.decodeMs + workMsSince(checking);
        if (!parsed.ok) {
          inFlight.release();
          this.options.onRejectedPayload();
          reply(parsed);
          refused(event, args.length === 2 ? 'refused by its schema' : 'not one payload', bytes);
          return;
        }
        if (
          !charge(
            event,
            'accepted: its handling and the work of its frame',
            acceptedCost(bytes, workMs, budget.burst),
          )
        ) {
          // closed: its hub:error says why; handling the event would be work for nobody
          inFlight.release();
          return;
        }
        void ready
          .then((ok) =>
            ok
              ? runClientEvent(ctx, event, parsed.data, (err) =>
                  log.error({ event, err: String(err) }, 'event handler failed'),
                )
              : { ok: false as const, code: 'E_UNAVAILABLE' as const, message: 'not connected' },
          )
          .then((response) => {
            inFlight.release();
            if (!response.ok && response.code === 'E_VALIDATION') this.options.onRejectedPayload();
            reply(response);
            const wasted = answerCost(response);
            if (wasted > 0) void charge(event, 'answered with an error: work for nothing', wasted);
          });
      });
    }
    socket.onAny((event: unknown, ...args: unknown[]) => {
      const frame = frames.shift() ?? NO_FRAME;
      if ((CLIENT_EVENTS as unknown[]).includes(event)) {
        listenerFrames.push(frame);
        return;
      }
      this.refuseUnknownEvent(event, args.at(-1));
      refused(event, 'unknown event', frame.bytes);
    });
  }

  /** The payload of a client event (`args` ends with its ack), or the `E_VALIDATION` ack. */
  private parsePayload(
    event: ClientEventName,
    args: unknown[],
  ): ReturnType<typeof parseClientEvent> {
    if (args.length !== 2) {
      return { ok: false, code: 'E_VALIDATION', message: `${event}: expected exactly one payload` };
    }
    return parseClientEvent(event, args[0]);
  }

  /**
   * An event whose name is no client event (Socket.IO would drop it unseen, there being no
   * listener): counted as a refused payload, answered `E_VALIDATION` if it carries an ack.
   */
  private refuseUnknownEvent(event: unknown, ack: unknown): void {
    this.options.onRejectedPayload();
    if (typeof ack !== 'function') return;
    (ack as (response: unknown) => void)({
      ok: false,
      code: 'E_VALIDATION',
      message: `unknown event ${JSON.stringify(String(event)).slice(0, 80)}`,
    });
  }

  /**
   * Closes a connection that spent its refusal budget: it kept emitting without waiting for its
   * acks, or kept sending events that are refused or answered with an error, or events faster
   * than ~1,000 a second, or frames costly to decode (big, or of many small values), and each
   * costs this replica its decoding and more, for as long as it goes on. The agent learns why
   * (`hub:error E_RATE_LIMITED`), its handshakes are refused here for the cooldown, and the
   * disconnect is the usual one: a task it holds is kept until the lease, resumed if it
   * reconnects in time, put back to wait otherwise. Its TCP connection is dropped
   * `FLOOD_CLOSE_GRACE_MS` later, whether or not it answered the WebSocket close
   * ({@link dropUpgradedConnection}).
   */
  private closeFlooder(
    socket: AgentSocket,
    budget: RefusalBudget,
    last: { event: unknown; kind: RefusalKind },
    log: Logger,
  ): void {
    if (!socket.connected) return; // once: a spent budget stays spent
    const { agentId } = socket.data.auth;
    this.floodCooldown.start(agentId);
    this.options.onFloodDisconnect();
    log.warn(
      {
        refusedOver: budget.burst,
        perSecond: budget.perSecond,
        lastRefused: { event: String(last.event).slice(0, 80), kind: last.kind },
      },
      'agent kept sending events that are refused: closing its connection',
    );
    socket.emit('hub:error', {
      code: 'E_RATE_LIMITED',
      message: `too many events refused (over ${budget.burst}, then ${budget.perSecond} a second: beyond ${MAX_EVENTS_IN_FLIGHT} in flight, without an ack, not valid, unknown, or answered with an error), or events too many or too costly to decode (over ${budget.perSecond / HANDLING_COST} a second): connection closed; wait for the acks of your events`,
    });
    socket.disconnect(true);
    dropUpgradedConnection(socket.request);
  }
}

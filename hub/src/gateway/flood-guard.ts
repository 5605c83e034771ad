import type { IncomingMessage } from 'node:http';
import { AppError, type ClientEventName } from '@agentcom/shared';

/**
 * Events of one connection that may be refused at once before the connection is closed; after
 * that, {@link FLOOD_REFUSALS_PER_SECOND} a second more. Every event refused at the boundary,
 * before any handler runs, counts, whatever the reason: beyond the in-flight limit
 * (`E_RATE_LIMITED`), sent without an ack callback (dropped), without exactly one payload or with
 * one its schema refuses (`E_VALIDATION`), or under a name that is no client event (dropped, or
 * answered `E_VALIDATION` when it carries an ack). Each still costs this replica its decoding,
 * the schema check of a big payload more.
 *
 * A sidecar never sends the last four kinds, and never gets one refused beyond the in-flight
 * limit from a replica that answers it: it waits for its acks (one log batch, one heartbeat, one
 * report, an accept), a handful of events where the limit is 32.
 * It only reaches the limit when the replica holds 32 of its events unanswered for longer than
 * its ack timeout (a Redis stall of a minute and more: it sends again what timed out), and is
 * then refused at most a few events a second: a log batch every 250 ms, a heartbeat each
 * interval, a report each ack timeout (34 a second with every timing at its minimum, 4 with the
 * defaults). Only a task printing over 10,000 lines a second throughout such a stall could have
 * its log batches refused faster (one per round trip), and being closed then costs nothing:
 * the sidecar reconnects once the cooldown is over and announces its task. A client that emits
 * without waiting for its acks, or keeps sending what is refused, gets there within
 * milliseconds.
 */
export const FLOOD_REFUSALS = 1000;
export const FLOOD_REFUSALS_PER_SECOND = 100;
/**
 * A refused event counts one refusal more for each of these bytes of its frame (attachments
 * included): decoding a 2 MiB frame costs this replica tens to hundreds of milliseconds, so
 * counted as one, a client sending big refused frames (a few dozen a second at most) stayed below
 * the refill rate and was never closed while it kept the replica busy. A refusal of an event
 * beyond the in-flight limit counts one, whatever its size (a sidecar's log batch, during a long
 * Redis stall).
 */
export const REFUSED_BYTES_PER_REFUSAL = 1024;
/** The refusals one refused frame of `bytes` counts. */
export const refusalCost = (bytes: number): number =>
  1 + Math.floor(bytes / REFUSED_BYTES_PER_REFUSAL);

/**
 * The bytes of a frame that cost nothing when its event is accepted; beyond them it counts one
 * refusal per {@link FRAME_BYTES_PER_REFUSAL} ({@link acceptedCost}). An accepted frame costs this
 * replica its decoding and schema check too, and a big one of small values a lot: measured on a
 * replica (2 cores, with its GC), a `task:complete` whose result is 1 MiB of `{}` takes ~470 ms to
 * answer, of zeros ~160 ms, and 64 KiB of `{}` ~25 ms. Counted as nothing, an agent could send such
 * results back to back for ever (one for a task it does not hold is answered
 * `E_ASSIGNMENT_SUPERSEDED`, as often as it likes) and hold the replica's event loop.
 *
 * The largest result a sidecar sends (`MAX_PAYLOAD_BYTES`, 1 MiB) counts 960 of the default 1,000,
 * which the budget refills in under 10 s: one at a time always passes, and the next one does
 * 10 s later (a sidecar whose tasks each return 1 MiB faster than that is closed, cools down, and
 * replays its report on its next connection); two back to back close the connection. Frames up to
 * 64 KiB (any heartbeat, accept, progress, a failure's error text, most results) count nothing: at
 * worst ~25 ms each, a handful of log batches' worth.
 */
export const FREE_FRAME_BYTES = 64 * 1024;
export const FRAME_BYTES_PER_REFUSAL = 1024;

/**
 * Accepted events whose frame costs nothing whatever its size. A log batch's schema accepts at
 * most 100 strings: 2 MiB of them decode in ~3 ms (~40 ms to answer, transport included, where
 * 1 MiB of small values takes hundreds), and a sidecar sends its batches back to back while its
 * task prints fast, one in flight: counted by size, a busy task would close its connection within
 * a second.
 */
const SIZE_FREE_EVENTS: ReadonlySet<ClientEventName> = new Set(['task:log']);

/**
 * The refusals a frame of `bytes` counts beyond the free ones, never more than the whole budget
 * (`burst`): one such frame on a connection with a full budget always passes, so a big report
 * replayed on a new connection is taken, whatever `AGENT_FLOOD_REFUSALS`.
 */
const frameCost = (bytes: number, burst: number): number =>
  Math.min(burst, Math.floor(Math.max(0, bytes - FREE_FRAME_BYTES) / FRAME_BYTES_PER_REFUSAL));

/** The refusals an accepted event's frame of `bytes` counts (see {@link FREE_FRAME_BYTES}). */
export const acceptedCost = (event: ClientEventName, bytes: number, burst: number): number =>
  SIZE_FREE_EVENTS.has(event) ? 0 : frameCost(bytes, burst);

/**
 * The refusals an event refused beyond the in-flight limit counts: one, and its frame's size
 * beyond the free bytes. It was decoded but not read, so not even a log batch is known to be a
 * cheap one; a sidecar gets such refusals only while the replica holds 32 of its events (a Redis
 * stall of a minute and more), when having its connection closed costs it nothing.
 */
export const inFlightRefusalCost = (bytes: number, burst: number): number =>
  Math.min(burst, 1 + frameCost(bytes, burst));

/**
 * How long this replica refuses the handshakes of an agent whose connection it closed for
 * flooding, with a budget of `refusals`: the time the budget takes to fill up again, so
 * reconnecting buys a flooder no more refusals than staying connected at the sustained rate would.
 */
export const floodCooldownMs = (refusals: number): number =>
  (refusals / FLOOD_REFUSALS_PER_SECOND) * 1000;
/** {@link floodCooldownMs} of the default budget: 10 s. */
export const FLOOD_COOLDOWN_MS = floodCooldownMs(FLOOD_REFUSALS);

/**
 * How long the WebSocket of a connection closed for flooding gets to finish its closing handshake
 * before this replica drops its TCP connection. `ws` would wait 30 s for the peer's close frame,
 * reading and parsing every frame the peer sends meanwhile: a flooder that never answers the
 * close would keep the replica busy that long. A client that reads what it is sent answers
 * within a round trip, after the `hub:error` that tells it why.
 */
export const FLOOD_CLOSE_GRACE_MS = 1000;

/**
 * The refusals one connection may still get: a token bucket of {@link FLOOD_REFUSALS} that fills
 * at {@link FLOOD_REFUSALS_PER_SECOND}. One budget per connection for every kind of refusal (see
 * {@link FLOOD_REFUSALS}); the events a connection has handled cost nothing here, even those a
 * handler answered with an error, but for their frame's size beyond {@link FREE_FRAME_BYTES}.
 */
export class RefusalBudget {
  private left: number;
  private at: number;

  constructor(
    readonly burst = FLOOD_REFUSALS,
    readonly perSecond = FLOOD_REFUSALS_PER_SECOND,
    now = performance.now(),
  ) {
    this.left = burst;
    this.at = now;
  }

  /** Counts `count` refusals; false once the budget is spent (the connection must be closed). */
  spend(now = performance.now(), count = 1): boolean {
    this.left = Math.min(this.burst, this.left + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
    if (this.left < count) return false;
    this.left -= count;
    return true;
  }
}

/**
 * Agents whose connection this replica closed for flooding, refused at the handshake until their
 * cooldown is over. Kept in this replica's memory, before any Redis work: a flooder that
 * reconnects through the load balancer to another replica spends that replica's budget once,
 * so the whole cluster takes at most one budget per replica per cooldown from it.
 */
export class FloodCooldown {
  private readonly until = new Map<string, number>();

  constructor(private readonly cooldownMs = FLOOD_COOLDOWN_MS) {}

  start(agentId: string, now = Date.now()): void {
    // the agents cooling down at once are the flooders of the last cooldown: a short walk
    for (const [id, end] of this.until) if (end <= now) this.until.delete(id);
    this.until.set(agentId, now + this.cooldownMs);
  }

  /**
   * Throws `E_RATE_LIMITED` when the agent a handshake names is cooling down. Checked before the
   * token, so a refused reconnect costs no Redis work: any handshake naming that agent is refused
   * meanwhile, and only that agent's own flood (on an authenticated connection) starts a cooldown.
   */
  check(auth: unknown, now = Date.now()): void {
    const agentId = (auth as { agentId?: unknown } | null | undefined)?.agentId;
    if (typeof agentId !== 'string') return;
    const end = this.until.get(agentId);
    if (end === undefined) return;
    if (end <= now) {
      this.until.delete(agentId);
      return;
    }
    throw new AppError(
      'E_RATE_LIMITED',
      `this agent's connection was closed for flooding; retry in ${Math.ceil((end - now) / 1000)} s`,
    );
  }
}

/**
 * Destroys, once `graceMs` have passed, the TCP connection that `request` (a Socket.IO
 * connection's `socket.request`) upgraded to a WebSocket, whatever state its closing handshake is
 * in (a no-op when it is over). Nothing when the request is no WebSocket upgrade: the TCP
 * connection of an HTTP long-polling request may be a keep-alive one that a proxy shares between
 * clients, while an upgraded one carries that WebSocket only (through a proxy too, as a tunnel of
 * its own). The hub serves WebSocket only.
 */
export function dropUpgradedConnection(
  request: IncomingMessage,
  graceMs = FLOOD_CLOSE_GRACE_MS,
): void {
  if (request.headers.upgrade?.toLowerCase() !== 'websocket') return;
  const tcp = request.socket;
  if (tcp.destroyed) return;
  setTimeout(() => tcp.destroy(), graceMs).unref();
}

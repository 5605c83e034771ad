import type { IncomingMessage } from 'node:http';
import { AppError, ERROR_CODES, type Ack } from '@agentcom/shared';

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
 * beyond the in-flight limit counts one, or the work of its frame when more
 * ({@link inFlightRefusalCost}).
 */
export const REFUSED_BYTES_PER_REFUSAL = 1024;
/** The refusals one refused frame of `bytes` counts. */
export const refusalCost = (bytes: number): number =>
  1 + Math.floor(bytes / REFUSED_BYTES_PER_REFUSAL);

/**
 * The milliseconds of this replica's event loop one refusal stands for when it counts the work of
 * a frame ({@link workCost}). Every accepted event counts its frame's work, a refused one about as
 * much or more ({@link refusalCost}, {@link inFlightRefusalCost}), so the budget's refill (100 a
 * second) leaves one connection's frames at most 25 ms of every second (2.5% of a core), and its
 * burst (1,000) 250 ms at once, whatever their size or shape.
 *
 * Measured, not guessed from the size: the decoding (`JSON.parse`) and schema check of 64 KiB take
 * ~10 ms nested 63 deep, ~5 ms of `{}` or of one object's keys, ~1.4 ms of zeros, 0.5 ms as one
 * string, 0.1 ms as a log batch (2 cores, Node 20). Under 64 KiB a frame once counted nothing, so
 * an agent could keep a replica's event loop busy with such frames as long as it liked; the shape
 * is no schema's to bound, since `JSON.parse` decodes the whole frame first and keeps only the last
 * of duplicated keys: a log batch whose first `lines` holds 2 MiB of `{}` (~110 ms on a replica)
 * and whose last one line passes the log schema, where it counted nothing.
 */
export const WORK_MS_PER_REFUSAL = 0.25;
/**
 * The bytes of a frame that count one refusal for reading it, which happens before the decoding
 * that is timed (unmasking, UTF-8, buffers): ~6.5 µs a KiB measured on a replica, 7.8 here. A log
 * batch of 1 MiB counts 32 for it and ~5 for its decoding; a sidecar streaming 2 MiB of log lines
 * a second (20,000 lines of 100 bytes, where its one batch in flight of 100 Redis writes carried
 * ~5,000 in the fault tests) spends ~80 of the 100 a second, ~100 with the handling of its 200
 * batches ({@link HANDLING_COST}): ~1.5 MiB a second stays under the refill.
 */
export const TRANSPORT_BYTES_PER_REFUSAL = 32 * 1024;
/** See {@link workCeilingMs}. */
export const WORK_CEILING_MS = 0.05;
/**
 * The most the timed work of a frame of `bytes` counts: 0.05 ms, and a refusal's worth (0.25 ms) a
 * KiB, as a refused frame of that size counts ({@link refusalCost}): 1.6 times the slowest shape
 * measured (nested arrays, ~0.15 ms a KiB). A timer also counts whatever happened meanwhile (a
 * garbage collection, the process waiting for a core, a paused VM; the decoding of a heartbeat
 * takes ~2 µs, yet one in a thousand measures over a millisecond): so bounded, a frame of a
 * couple of hundred bytes (a heartbeat, an accept, a no-op result) never counts more than half a
 * refusal, whatever the replica went through while it decoded it. A shape slower than the ceiling
 * would still count a refusal a KiB.
 */
export const workCeilingMs = (bytes: number): number =>
  WORK_CEILING_MS + (bytes / REFUSED_BYTES_PER_REFUSAL) * WORK_MS_PER_REFUSAL;

/**
 * The refusals the work of a frame of `bytes` counts, `workMs` its timed decoding and schema
 * check: a fraction for an ordinary event (a heartbeat or a no-op result ~0.05-0.1), never more
 * than the whole budget (`burst`): one frame on a connection with a full budget always passes, so
 * a big report replayed on a new connection is taken, whatever `AGENT_FLOOD_REFUSALS`.
 */
export const workCost = (bytes: number, workMs: number, burst: number): number =>
  Math.min(
    burst,
    bytes / TRANSPORT_BYTES_PER_REFUSAL +
      Math.min(Math.max(0, workMs), workCeilingMs(bytes)) / WORK_MS_PER_REFUSAL,
  );

/**
 * What every accepted event counts besides the work of its frame: the fixed cost of handling it,
 * which no timer of the frame sees (Socket.IO's dispatch, the handler, its Redis call, the ack).
 * Measured (one hub process, one connection, 32 events in flight, 20,000 of each): 55-80 µs of the
 * replica's CPU for a heartbeat or for a report of a task the agent does not hold, 180 µs for a
 * `task:progress` written to Redis, and 5-35 µs of Redis; one connection got 4,000-15,000 of them
 * a second, where the work of their frames alone (~0.03-0.05 each) let ~2,000-3,000 a second
 * through for as long as it liked.
 *
 * At 0.1, the refill (100 a second) holds one connection to 1,000 events a second sustained,
 * whatever they are (~900 with the work of small frames: at most ~5-18% of a core and ~3% of
 * Redis), and the burst to 10,000 at once. Not their full price (0.3-0.7 of a refusal at 0.25 ms
 * each): an honest agent sends faster than that. The throughput benchmark drives at most ~100
 * tasks a second per agent (10,000 a second over 100 agents), an accept and a complete each:
 * ~200 events a second, ~30 of the refill at ~0.15 each, room for agents served three times
 * unevenly. A sidecar's log batches (one in flight, ~50 a second of 100 short lines, each line
 * a Redis write) spend ~5 a second more for it. Events answered for nothing count more
 * ({@link WASTED_ANSWER_COST}).
 */
export const HANDLING_COST = 0.1;

/**
 * The refusals an accepted event counts before its handler runs: {@link HANDLING_COST} and the
 * work of its frame ({@link workCost}), never more than the whole budget (`burst`).
 */
export const acceptedCost = (bytes: number, workMs: number, burst: number): number =>
  Math.min(burst, HANDLING_COST + workCost(bytes, workMs, burst));

/**
 * What an accepted event counts more once its handler answered it with an error of the agent's
 * making, any code that is not retryable (`E_ASSIGNMENT_SUPERSEDED`: a report, a progress, an
 * accept of a task it does not hold; `E_VALIDATION`; ...): the replica and Redis did its work for
 * nothing, as for an event refused at the boundary, and it counts as one. A connection sending
 * such events is closed within ~900 of them, however fast (then ~90 a second). A sidecar gets
 * such answers only for a report or a log batch that comes after its assignment ended: a handful
 * after a reconnect, a log batch every 250 ms at most (it waits that long after a refused one).
 * The replica's own failures (retryable: `E_UNAVAILABLE`, `E_INTERNAL`, `E_RATE_LIMITED`) count
 * nothing more: a sidecar retrying through a Redis outage is not flooding.
 */
export const WASTED_ANSWER_COST = 1;

/** The refusals the answer of an accepted event counts ({@link WASTED_ANSWER_COST} or none). */
export const answerCost = (response: Ack): number =>
  response.ok || ERROR_CODES[response.code].retryable ? 0 : WASTED_ANSWER_COST;

/**
 * The refusals an event refused beyond the in-flight limit counts: one, or the work of its frame
 * when that is more (`decodeMs`: it was decoded, not checked). One for a heartbeat, a report or a
 * log batch of a few KiB: a sidecar gets such refusals only while the replica holds 32 of its
 * events (a Redis stall of a minute and more), when having its connection closed costs it nothing.
 * Counted as one, frames that an agent keeping 32 events in flight sends to be refused would be
 * decoded for one refusal each, however long that takes.
 */
export const inFlightRefusalCost = (bytes: number, decodeMs: number, burst: number): number =>
  Math.min(burst, Math.max(1, workCost(bytes, decodeMs, burst)));

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
 * {@link FLOOD_REFUSALS}); the events a connection has handled count their handling and the work
 * of their frame ({@link acceptedCost}), and one more when answered for nothing
 * ({@link answerCost}). Counts may be fractions.
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

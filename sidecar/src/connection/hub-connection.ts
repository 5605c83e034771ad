import { EventEmitter } from 'node:events';
import { Manager, type Socket } from 'socket.io-client';
import {
  AGENT_NAMESPACE,
  CLIENT_ACK_SCHEMAS,
  backoffMs,
  describeZodError,
  type ClientEventName,
  type ClientToServerEvents,
  type HandshakeAuth,
  type ServerToClientEvents,
} from '@agentcom/shared';
import type { Logger } from '../logger';

export type HubSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** The payload of a sidecar → hub event. */
export type ClientMessage<E extends ClientEventName> = Parameters<ClientToServerEvents[E]>[0];
/** The ack the hub answers a sidecar → hub event with. */
export type ClientAck<E extends ClientEventName> = Parameters<
  Parameters<ClientToServerEvents[E]>[1]
>[0];

/** Handshake refusals no retry can fix: the sidecar stops (exit code 3). */
const REFUSED_FOR_GOOD: ReadonlySet<string> = new Set([
  'E_UNAUTHORIZED',
  'E_FORBIDDEN',
  'E_PROTOCOL_VERSION',
  'E_VALIDATION',
]);

/** Why the connection ended for good. */
export interface ConnectionEnd {
  /** `refused`: the hub refused the handshake for good; `replaced`: a newer connection of this agent took over. */
  kind: 'refused' | 'replaced';
  code: string;
  message: string;
}

export type HubConnectionEvents = {
  /** Connected (or reconnected) and authenticated to `url`. */
  connected: [url: string];
  disconnected: [reason: string];
  /** Raw hub → sidecar payloads: the receiver validates them. */
  'task:assign': [payload: unknown];
  'task:cancel': [payload: unknown];
  /** The connection ended and will not come back; see {@link ConnectionEnd}. */
  ended: [end: ConnectionEnd];
};

export interface HubConnectionOptions {
  urls: readonly string[];
  /** Called before every (re)connection: the handshake always carries the current state. */
  auth: () => HandshakeAuth;
  /**
   * Failed connection attempts on one URL before moving to the next (several URLs only). An attempt
   * fails when it does not end in a connection to the `/agent` namespace: the hub cannot be
   * reached, the connection drops during the handshake, or the handshake takes longer than
   * `handshakeTimeoutMs`.
   */
  failoverAttempts: number;
  /**
   * How long the `/agent` handshake may take once the websocket is open before the attempt counts
   * as failed and the connection is dropped.
   */
  handshakeTimeoutMs: number;
  /** Default wait for an ack in {@link HubConnection.request}. */
  ackTimeoutMs: number;
  logger: Logger;
  /** socket.io's first reconnect delay. Default 200 ms. */
  reconnectionDelay?: number;
  /** socket.io's largest reconnect delay. Default 10 s. */
  reconnectionDelayMax?: number;
  /**
   * Pause before connecting again after the hub itself refused the handshake with a retryable
   * code or closed the socket (socket.io does not reconnect on its own then), ±50%. Default 2 s.
   */
  refusedRetryMs?: number;
  /**
   * The random source that draws the order in which this sidecar moves through several URLs (see
   * {@link HubConnection}), in [0, 1). Default `Math.random`; tests pass a fixed one.
   */
  random?: () => number;
}

/**
 * Where the connection stands: `connecting` until the first connection of this process,
 * `connected`, or `disconnected` after a connection was lost (reconnecting, or closed).
 */
export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

/** Thrown by {@link HubConnection.request} when there is no live connection to send on. */
export class NotConnectedError extends Error {
  constructor(event: string) {
    super(`not connected to a hub: ${event} not sent`);
    this.name = 'NotConnectedError';
  }
}

/**
 * The sidecar's Socket.IO connection to the hub (`/agent` namespace, websocket only).
 *
 * Reconnecting is socket.io-client's: exponential backoff with jitter (`reconnectionDelay` 200 ms,
 * `reconnectionDelayMax` 10 s, `randomizationFactor` 0.5). An attempt whose websocket opened but
 * whose `/agent` handshake did not complete (the connection dropped, or `handshakeTimeoutMs`
 * passed) is retried by a new Manager after the same backoff, since socket.io-client starts its
 * backoff and its attempt count over on every websocket it opens. With several URLs each gets
 * `failoverAttempts` failed attempts, counted here across both kinds, then a new Manager takes the
 * next URL; after each full round without success the next round's first delay doubles (up to the
 * max), so an outage of all hubs is not hammered. The handshake `auth` is a function, so every
 * attempt announces the task held at that moment.
 *
 * The first URL is the first one tried (operators spread sidecars by ordering their lists). "The
 * next URL" is the next one in this connection's own cycle through the URLs, a random permutation
 * drawn once (`random`): sidecars configured with the same list that leave the same hub spread over
 * the others instead of all taking the one listed after it, and each round still visits every URL
 * once.
 *
 * The hub ending things: a handshake refused with `E_UNAUTHORIZED`, `E_FORBIDDEN`,
 * `E_PROTOCOL_VERSION` or `E_VALIDATION`, or `hub:error` `E_REPLACED`, emits `ended` and stops
 * for good. A refusal with another code, or the hub closing the socket, retries after a pause.
 * `hub:draining` moves to the next URL (the same one when there is only one, after the pause).
 */
export class HubConnection extends EventEmitter<HubConnectionEvents> {
  private readonly urls: readonly string[];
  /**
   * The indexes of `urls` in the order this connection moves through them, read as a cycle: the
   * next URL is the one after the current one (the first after the last).
   */
  private readonly cycle: readonly number[];
  private urlIndex = 0;
  private socket: HubSocket | undefined;
  /** Incremented on every teardown: handlers of an older socket ignore what they hear. */
  private generation = 0;
  private urlsFailed = 0;
  private failedRounds = 0;
  /** Attempts on the current URL that failed since it was taken or last connected. */
  private attemptsFailed = 0;
  /** Drops an attempt whose websocket is open but whose handshake does not complete. */
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** Whether the current run of failed attempts was logged at warn already (the rest go to debug). */
  private unreachableLogged = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The URL index {@link retryTimer} opens. */
  private retryIndex = 0;
  /**
   * Whether an attempt is under way on the current socket (its websocket opening, or its handshake)
   * whose outcome was not counted yet; false between attempts, while a backoff runs.
   */
  private attempting = false;
  private stopped = false;
  private stateNow: ConnectionState = 'connecting';
  private stateSince = Date.now();
  private readonly logger: Logger;

  constructor(private readonly options: HubConnectionOptions) {
    super();
    if (options.urls.length === 0) throw new Error('no hub URL');
    this.urls = options.urls;
    this.cycle = shuffledIndexes(options.urls.length, options.random ?? Math.random);
    this.logger = options.logger;
  }

  get connected(): boolean {
    return this.socket?.connected === true;
  }

  /** The connection's state and since when (epoch ms). */
  get state(): { state: ConnectionState; since: number } {
    return { state: this.stateNow, since: this.stateSince };
  }

  /** The URL in use (connected or being tried). */
  get url(): string {
    return this.urls[this.urlIndex] ?? '';
  }

  start(): void {
    this.open(0);
  }

  /**
   * Sends `event` and resolves with the hub's ack. Rejects with {@link NotConnectedError} when not
   * connected (nothing is buffered for later), or when no ack came within `timeoutMs` or the
   * connection dropped first.
   */
  async request<E extends ClientEventName>(
    event: E,
    message: ClientMessage<E>,
    timeoutMs = this.options.ackTimeoutMs,
  ): Promise<ClientAck<E>> {
    const socket = this.socket;
    if (socket === undefined || !socket.connected) throw new NotConnectedError(event);
    const emitter = socket.timeout(timeoutMs) as unknown as AckEmitter<E>;
    const ack: unknown = await emitter.emitWithAck(event, message);
    const parsed = CLIENT_ACK_SCHEMAS[event].safeParse(ack);
    if (!parsed.success) {
      throw new Error(
        `the hub answered ${event} with a malformed ack: ${describeZodError(parsed.error)}`,
      );
    }
    // An error `code` this version does not know (a newer hub's) is read as retryable.
    return parsed.data as ClientAck<E>;
  }

  /**
   * Not connected and waiting to try again (a backoff or a pause running, no attempt under way):
   * makes an attempt on the URL it would try next, now, with socket.io's backoff started over. A
   * stopping sidecar that still holds reports calls it: the backoff grown during an outage (up to
   * `reconnectionDelayMax`) would otherwise take much of the time it can wait for the hub to come
   * back. False when closed: it will not connect again.
   */
  retryNow(): boolean {
    if (this.stopped) return false;
    if (this.connected || this.attempting) return true;
    const index = this.retryTimer === undefined ? this.urlIndex : this.retryIndex;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.logger.debug({ url: this.urls[index] }, 'trying the hub again now');
    this.open(index);
    return true;
  }

  /** Disconnects and stays disconnected. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.teardown('closing');
  }

  private open(index: number): void {
    this.teardown('switching hub');
    if (this.stopped) return;
    const generation = this.generation;
    const isCurrent = (): boolean => generation === this.generation;
    this.urlIndex = index % this.urls.length;
    const url = this.url;
    const manager = new Manager<ServerToClientEvents, ClientToServerEvents>(url, {
      transports: ['websocket'],
      autoConnect: false,
      reconnection: true,
      // The attempts are counted here (see attemptFailed): socket.io-client's count starts over
      // on every websocket it opens, so it never gives up on a hub that accepts the websocket but
      // never completes the handshake.
      reconnectionAttempts: Infinity,
      reconnectionDelay: this.firstDelay(),
      reconnectionDelayMax: this.options.reconnectionDelayMax ?? 10_000,
      randomizationFactor: 0.5,
    });
    const socket = manager.socket(AGENT_NAMESPACE, {
      auth: (send: (data: object) => void) => send(this.options.auth()),
    });
    this.socket = socket;
    this.attempting = true;
    /** Whether the namespace connection is up (socket.io-client clears `connected` before `disconnect`). */
    let up = false;
    // One failure can be heard twice (an error on an open websocket is followed by its close):
    // only the first one counts.
    const failed = (why: string, retry: 'by socket.io' | 'by reopening'): void => {
      if (!this.attempting) return;
      this.attempting = false;
      clearTimeout(this.handshakeTimer);
      this.attemptFailed(url, why, retry);
    };

    manager.on('reconnect_attempt', () => {
      if (isCurrent()) this.attempting = true;
    });
    manager.on('open', () => {
      if (!isCurrent()) return;
      // The websocket is open; a hub that lost its backend can still hold the handshake forever.
      const timeoutMs = this.options.handshakeTimeoutMs;
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = setTimeout(() => {
        if (isCurrent()) failed(`no handshake within ${timeoutMs} ms`, 'by reopening');
      }, timeoutMs);
    });
    socket.on('connect', () => {
      if (!isCurrent()) return;
      clearTimeout(this.handshakeTimer);
      this.attempting = false;
      up = true;
      this.attemptsFailed = 0;
      this.urlsFailed = 0;
      this.failedRounds = 0;
      this.unreachableLogged = false;
      this.setState('connected');
      this.logger.info({ url }, 'connected to the hub');
      this.emit('connected', url);
    });
    socket.on('connect_error', (err) => {
      if (!isCurrent()) return;
      // While the socket is active socket.io reconnects by itself: the attempt only failed.
      if (socket.active) failed(err.message, 'by socket.io');
      else this.onRefused(url, err);
    });
    socket.on('disconnect', (reason) => {
      if (!isCurrent()) return;
      if (!up) {
        // socket.io-client reports a connection dropped during the handshake as a disconnect,
        // but nothing was connected: the state stays as it was (`connecting` before the first
        // connection), and it is one more failed attempt.
        failed(`connection closed during the handshake: ${reason}`, 'by reopening');
        return;
      }
      up = false;
      this.logger.warn({ url, reason }, 'disconnected from the hub');
      this.setState('disconnected');
      this.emit('disconnected', reason);
      // socket.io reconnects by itself except when the server closed the socket on purpose.
      if (reason === 'io server disconnect') this.moveOn(this.pause());
    });
    socket.on('task:assign', (payload) => {
      if (isCurrent()) this.emit('task:assign', payload);
    });
    socket.on('task:cancel', (payload) => {
      if (isCurrent()) this.emit('task:cancel', payload);
    });
    socket.on('hub:draining', () => {
      if (!isCurrent()) return;
      this.logger.info({ url }, 'the hub is draining: reconnecting elsewhere');
      this.moveOn(this.urls.length > 1 ? 0 : this.pause());
    });
    socket.on('hub:error', (payload: unknown) => {
      if (!isCurrent()) return;
      const { code, message } = describeHubError(payload);
      if (code === 'E_REPLACED') {
        this.end({ kind: 'replaced', code, message });
        return;
      }
      this.logger.warn({ url, code, message }, 'the hub reported an error');
    });
    socket.connect();
  }

  /**
   * Counts an attempt on `url` that did not end in a connection, and moves to the next URL after
   * `failoverAttempts` of them. Otherwise the same URL is tried again: socket.io-client does that by
   * itself after a websocket that could not open; a new Manager does it, after a backoff, for a
   * handshake that did not complete.
   */
  private attemptFailed(url: string, why: string, retry: 'by socket.io' | 'by reopening'): void {
    this.attemptsFailed++;
    const limit = this.options.failoverAttempts;
    if (this.urls.length > 1 && this.attemptsFailed >= limit) {
      this.logger.warn({ url, err: why }, `no answer from this hub after ${limit} attempts`);
      this.moveOn(0);
      return;
    }
    const level = this.unreachableLogged ? 'debug' : 'warn';
    this.unreachableLogged = true;
    this.logger[level]({ url, err: why }, 'cannot reach the hub; retrying');
    if (retry === 'by socket.io') return;
    const index = this.urlIndex;
    this.teardown('retrying');
    this.retryLater(index, this.backoff(this.attemptsFailed));
  }

  /** A handshake the hub refused: socket.io does not retry it by itself. */
  private onRefused(url: string, err: Error): void {
    const { code, message } = describeHubError((err as { data?: unknown }).data, err.message);
    if (REFUSED_FOR_GOOD.has(code)) {
      this.end({ kind: 'refused', code, message });
      return;
    }
    this.logger.warn({ url, code, message }, 'the hub refused the connection; retrying');
    this.moveOn(this.pause());
  }

  /**
   * Drops the current socket and tries the next URL of the cycle (the same one if it is the only
   * one). The cycle holds every URL once, so `urls.length` moves make a round wherever it began.
   */
  private moveOn(delayMs: number): void {
    this.attemptsFailed = 0;
    this.urlsFailed++;
    if (this.urlsFailed % this.urls.length === 0) this.failedRounds++;
    const next = this.nextIndex();
    this.teardown('switching hub');
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (delayMs <= 0) {
      this.open(next);
      return;
    }
    this.retryLater(next, delayMs);
  }

  /** Opens URL `index` after `delayMs` (replacing a retry already planned). */
  private retryLater(index: number, delayMs: number): void {
    clearTimeout(this.retryTimer);
    this.retryIndex = index;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.open(index);
    }, delayMs);
  }

  /** The URL index after the current one in this connection's cycle. */
  private nextIndex(): number {
    const position = this.cycle.indexOf(this.urlIndex);
    return this.cycle[(position + 1) % this.cycle.length] ?? 0;
  }

  private end(end: ConnectionEnd): void {
    this.logger.error(
      { url: this.url, code: end.code, reason: end.message },
      `connection ended: ${end.kind}`,
    );
    this.close();
    this.emit('ended', end);
  }

  /** socket.io's first reconnect delay: doubled per full round of URLs without a connection. */
  private firstDelay(): number {
    const max = this.options.reconnectionDelayMax ?? 10_000;
    return Math.min((this.options.reconnectionDelay ?? 200) * 2 ** this.failedRounds, max);
  }

  /** socket.io's backoff before the next attempt after `failed` failed ones: doubling, ±50%, capped. */
  private backoff(failed: number): number {
    const maxMs = this.options.reconnectionDelayMax ?? 10_000;
    return backoffMs(failed, { baseMs: this.firstDelay(), maxMs });
  }

  private pause(): number {
    return backoffMs(1, { baseMs: this.options.refusedRetryMs ?? 2000 });
  }

  private teardown(reason: string): void {
    this.generation++;
    this.attempting = false;
    clearTimeout(this.handshakeTimer);
    const socket = this.socket;
    this.socket = undefined;
    if (socket === undefined) return;
    const wasConnected = socket.connected;
    socket.disconnect();
    if (wasConnected) {
      this.setState('disconnected');
      this.emit('disconnected', reason);
    }
  }

  private setState(state: ConnectionState): void {
    if (state === this.stateNow) return;
    this.stateNow = state;
    this.stateSince = Date.now();
  }
}

/** `emitWithAck` on a `timeout()` socket, for one event: socket.io's types cannot follow a generic event name. */
interface AckEmitter<E extends ClientEventName> {
  emitWithAck(event: E, message: ClientMessage<E>): Promise<unknown>;
}

/** `0 .. count - 1` in a random order (Fisher-Yates, `random` in [0, 1)). */
function shuffledIndexes(count: number, random: () => number): number[] {
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    // Clamped: a source that strays out of [0, 1) must not index past either end.
    const j = Math.min(Math.max(Math.floor(random() * (i + 1)), 0), i);
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

function describeHubError(
  payload: unknown,
  fallback = 'unknown error',
): { code: string; message: string } {
  if (typeof payload === 'object' && payload !== null) {
    const { code, message } = payload as { code?: unknown; message?: unknown };
    return {
      code: typeof code === 'string' ? code : 'E_UNKNOWN',
      message: typeof message === 'string' ? message : fallback,
    };
  }
  return { code: 'E_UNKNOWN', message: fallback };
}

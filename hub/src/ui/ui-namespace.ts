import type { Namespace, Server, Socket } from 'socket.io';
import { dropUpgradedConnection } from '../gateway/flood-guard';
import type { Logger } from '../logger';
import type { RedisProblemCheck } from '../redis/redis-probe';
import {
  UI_NAMESPACE,
  type UiClientToServerEvents,
  type UiServerToClientEvents,
  type UiSnapshot,
  type UiSnapshotRequest,
  type UiSocketData,
  type UiTransition,
} from './ui-events';
import { backlogOverLimit, outputBacklog } from './output-backlog';
import { SharedSnapshot } from './shared-snapshot';
import type { UiSessions } from './ui-session';

export type UiNamespace = Namespace<
  UiClientToServerEvents,
  UiServerToClientEvents,
  Record<string, never>,
  UiSocketData
>;
type UiSocket = Socket<
  UiClientToServerEvents,
  UiServerToClientEvents,
  Record<string, never>,
  UiSocketData
>;

/** What feeds {@link broadcastLocal}: run only while this replica has `/ui` sockets. */
export interface UiTail {
  /** Starts it if stopped; resolves once it will deliver every transition from now on. */
  start(): Promise<void>;
  stop(): void;
}

export interface UiNamespaceOptions {
  io: Server;
  sessions: UiSessions;
  readSnapshot: () => Promise<UiSnapshot>;
  /** Started by the first socket of this replica, stopped when its last one is gone. */
  tail: UiTail;
  logger: Logger;
  /**
   * While it names a problem, handshakes are refused `E_UNAVAILABLE` and `snapshot:get` answers
   * an error, at once: their session checks would wait in ioredis' offline queue (one queued
   * command per handshake: a client could pile up any number of them during an outage).
   */
  redisProblem: RedisProblemCheck;
  /** Shortest interval between two snapshots one socket may ask for (ms). Default 1000. */
  minSnapshotIntervalMs?: number;
  /** How long a built snapshot answers other sockets (ms). Default `SNAPSHOT_REUSE_MS`. */
  snapshotReuseMs?: number;
  /**
   * The clock of a snapshot's `serverTime`: the record times it shows are on Redis's clock
   * (`AgentStore.now`), and the page takes its offset to the browser from it.
   */
  now: () => number;
}

/**
 * `/ui` handshakes one Engine.IO connection may have its session checked for (one Redis command
 * each). The page makes one per connection: its socket is the only one on its connection, so
 * socket.io-client closes the connection when the socket is refused or disconnected, and
 * connects again on a new one. A client sending CONNECT after CONNECT on one connection (valid
 * sessions or not) would otherwise cost Redis a command each; past the budget its handshake is
 * refused `E_RATE_LIMITED`, without asking Redis, and its connection closed. Handshakes refused
 * `E_UNAVAILABLE` (Redis does not answer) ask Redis nothing and do not count.
 */
export const UI_SESSION_CHECKS_PER_CONNECTION = 5;

const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Redis does not answer (`redisProblem`): a handshake is refused without asking it. */
class RedisUnavailable extends Error {
  constructor(problem: string) {
    super(`${problem}; retry later`);
  }
}

/** A connection spent its {@link UI_SESSION_CHECKS_PER_CONNECTION}: refused without asking Redis. */
class HandshakeBudgetSpent extends Error {}

/** A `connect_error` the browser can tell apart: `err.data.code`. */
function refusal(
  code: 'E_UNAUTHORIZED' | 'E_UNAVAILABLE' | 'E_RATE_LIMITED',
  message: string,
): Error {
  return Object.assign(new Error(message), { data: { code, message } });
}

/**
 * The `/ui` namespace: only sockets presenting a live UI session (`auth: { session }`) get in.
 * The first one starts the tail and each is let in only once the tail is running, so its
 * snapshot and the transitions after it leave no gap; the last one to leave stops the tail.
 * Each gets a snapshot on connect and on request, one read shared by the sockets that ask
 * together (shared-snapshot.ts: a socket that joined after the read also gets the transitions
 * handed out in between); transitions reach it through {@link broadcastLocal}, which emits to
 * this replica's browsers only (every replica tails the stream itself, so going through the
 * Redis adapter would deliver each transition N times).
 * While Redis does not answer, handshakes and snapshot requests are answered at once with an
 * error; a socket whose output backlog passes its limit (output-backlog.ts) is closed, and so is
 * a connection past {@link UI_SESSION_CHECKS_PER_CONNECTION} handshakes.
 */
export function createUiNamespace(options: UiNamespaceOptions): {
  nsp: UiNamespace;
  broadcastLocal(events: UiTransition[]): void;
} {
  const { sessions, readSnapshot, tail, logger, redisProblem } = options;
  const minInterval = options.minSnapshotIntervalMs ?? 1000;
  const shared = new SharedSnapshot({
    read: readSnapshot,
    now: options.now,
    ...(options.snapshotReuseMs === undefined ? {} : { reuseMs: options.snapshotReuseMs }),
  });
  const nsp = options.io.of(UI_NAMESPACE) as unknown as UiNamespace;

  // Sockets of this replica that need the tail: counted from the handshake (the tail must run
  // before the socket is let in) until the socket leaves or, for a handshake the client gave
  // up on (no `connection`, so no `disconnect` either), its transport closes.
  let holders = 0;
  const holdTail = (socket: UiSocket): Promise<void> => {
    if (socket.conn.readyState !== 'open') return Promise.resolve(); // gone already: no close to come
    holders++;
    let held = true;
    const release = (): void => {
      if (!held) return;
      held = false;
      socket.off('disconnect', release);
      socket.conn.off('close', release);
      holders--;
      if (holders === 0) {
        tail.stop();
        shared.forget();
      }
    };
    socket.once('disconnect', release);
    socket.conn.once('close', release);
    return tail.start();
  };

  // A browser that stops reading (or a client that only pretends to be one: it may still answer
  // pings) would have everything sent to it held here for as long as its connection lasts. Its
  // connection is closed instead, the TCP connection at once (a WebSocket close would wait behind
  // the unread output); the page reconnects and starts again from a snapshot.
  const droppedForBacklog = (socket: UiSocket): boolean => {
    const backlog = outputBacklog(socket);
    if (!backlogOverLimit(backlog)) return false;
    logger.warn(
      { socket: socket.id, ...backlog },
      'ui: a browser does not read what it is sent: closing its connection',
    );
    socket.disconnect(true);
    dropUpgradedConnection(socket.request, 0);
    return true;
  };

  // Session checks asked for by each Engine.IO connection: weakly held, so a closed connection
  // takes its count with it.
  const sessionChecks = new WeakMap<UiSocket['conn'], number>();
  /**
   * Counts a session check for the socket's connection; false once its budget is spent. The
   * first handshake past it closes the connection, once its refusal is written (the namespace
   * writes it on the next tick; a closing connection would not); any sent before the close
   * lands are refused too, still without asking Redis.
   */
  const takeSessionCheck = (socket: UiSocket): boolean => {
    const taken = (sessionChecks.get(socket.conn) ?? 0) + 1;
    sessionChecks.set(socket.conn, taken);
    if (taken <= UI_SESSION_CHECKS_PER_CONNECTION) return true;
    if (taken === UI_SESSION_CHECKS_PER_CONNECTION + 1) {
      logger.warn(
        { socket: socket.id, budget: UI_SESSION_CHECKS_PER_CONNECTION },
        'ui: a connection sends handshake after handshake: closing it',
      );
      setImmediate(() => {
        socket.conn.close();
        dropUpgradedConnection(socket.request); // a peer that never answers the close
      });
    }
    return false;
  };

  nsp.use((socket, next) => {
    const session = (socket.handshake.auth as { session?: unknown } | undefined)?.session;
    Promise.resolve(redisProblem())
      .then((problem) => {
        if (problem !== undefined) throw new RedisUnavailable(problem);
        if (!takeSessionCheck(socket)) throw new HandshakeBudgetSpent();
        return sessions.touch(session);
      })
      .then(
        (ok) => {
          if (!ok) {
            next(refusal('E_UNAUTHORIZED', 'no live UI session: reload the page'));
            return;
          }
          socket.data.session = session as string;
          return holdTail(socket).then(() => next());
        },
        (err: unknown) => {
          if (err instanceof RedisUnavailable) {
            next(refusal('E_UNAVAILABLE', err.message));
            return;
          }
          if (err instanceof HandshakeBudgetSpent) {
            next(refusal('E_RATE_LIMITED', 'too many handshakes on one connection'));
            return;
          }
          logger.warn({ err: errorMessage(err) }, 'ui: session check failed');
          next(refusal('E_UNAVAILABLE', 'session check failed; retrying'));
        },
      );
  });

  nsp.on('connection', (socket: UiSocket) => {
    // it is in the namespace now: every batch broadcast from here on reaches it
    const joinedAt = shared.handedOut;
    const sendMissed = (missed: UiTransition[]): void => {
      if (missed.length > 0) socket.emit('transitions', missed);
    };
    let lastSnapshotAt = Date.now();
    shared.forTab(joinedAt).then(
      ({ snapshot, missed }) => {
        if (droppedForBacklog(socket)) return;
        socket.emit('snapshot', snapshot);
        sendMissed(missed);
      },
      (err: unknown) => logger.warn({ err: errorMessage(err) }, 'ui: snapshot failed'),
    );

    // `(request, ack)`; a page loaded before `request` existed sends `(ack)`
    socket.on('snapshot:get', (request: unknown, ack?: unknown) => {
      const callback = typeof request === 'function' ? request : ack;
      if (typeof callback !== 'function') return;
      const reply = callback as (response: UiSnapshot | { error: string }) => void;
      const fresh = (request as UiSnapshotRequest | null | undefined)?.fresh === true;
      void (async () => {
        // Redis first: while it does not answer, the request is answered now (the page retries)
        const problem = await redisProblem();
        if (problem !== undefined) {
          reply({ error: `${problem}; retry later` });
          return;
        }
        if (Date.now() - lastSnapshotAt < minInterval) {
          reply({ error: 'too many snapshot requests' });
          return;
        }
        lastSnapshotAt = Date.now();
        // A session that expired while connected (Redis restarted without it) ends the socket:
        // the browser's reconnect is then refused and the page says to reload.
        if (!(await sessions.touch(socket.data.session))) {
          socket.disconnect(true);
          return;
        }
        const { snapshot, missed } = await shared.forTab(joinedAt, { fresh });
        if (droppedForBacklog(socket)) return;
        reply(snapshot);
        sendMissed(missed);
      })().catch((err: unknown) => {
        logger.warn({ err: errorMessage(err) }, 'ui: snapshot failed');
        reply({ error: 'snapshot failed' });
      });
    });
  });

  return {
    nsp,
    broadcastLocal(events) {
      if (events.length === 0) return;
      shared.noteHandedOut(events);
      for (const socket of nsp.sockets.values()) droppedForBacklog(socket);
      if (nsp.sockets.size > 0) nsp.local.emit('transitions', events);
    },
  };
}

import { once } from 'node:events';
import { chmod, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../logger';
import { errorText } from '../error-text';
import { MAX_IPC_LINE_BYTES, type IpcResponse } from './ipc-protocol';

/** An idle local connection is closed after this long. */
const IDLE_TIMEOUT_MS = 60_000;

/** Local connections open at once; one more is closed as it arrives. */
export const MAX_IPC_CONNECTIONS = 32;

/** Answers one request line (already parsed as JSON, not yet validated). */
export type IpcHandler = (request: unknown) => Promise<IpcResponse>;

export interface IpcServer {
  readonly path: string;
  /** Stops listening, closes open connections and removes the socket file. */
  close(): Promise<void>;
}

/**
 * Listens on the unix socket `path` for the local commands. The socket is created owner-only
 * (0600): the umask is narrowed around `listen()`, whose bind is synchronous, so the file never
 * exists with a wider mode; a chmod afterwards makes sure of it. Its directory (the state dir) is
 * 0700 as well. A socket file left by a dead sidecar is removed first: the caller holds the
 * state-dir lock, so no live sidecar owns it.
 *
 * Each connection carries newline-delimited JSON: every line is a request, answered by one line,
 * one request at a time: the next is read once the answer has been written, so a client that
 * sends and never reads is held back by its socket, not buffered here. A client may half-close
 * after its request: the connection is closed once every request read was answered.
 */
export async function startIpcServer(
  path: string,
  handler: IpcHandler,
  logger: Logger,
): Promise<IpcServer> {
  await rm(path, { force: true });
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    serve(socket, handler, logger);
  });
  server.maxConnections = MAX_IPC_CONNECTIONS;
  listenOwnerOnly(server, path);
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([err]) => Promise.reject(err as Error)),
  ]);
  await chmod(path, 0o600);
  const mode = (await stat(path)).mode & 0o777;
  if (mode !== 0o600) {
    server.close();
    throw new Error(`the IPC socket ${path} has mode ${mode.toString(8)}, not 600`);
  }
  logger.debug({ path }, 'local IPC listening');

  let closing: Promise<void> | undefined;
  return {
    path,
    close: () => {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await closed;
        await rm(path, { force: true });
      })();
      return closing;
    },
  };
}

/** `listen()` with the umask narrowed to owner-only for the (synchronous) bind. */
function listenOwnerOnly(server: Server, path: string): void {
  const previous = process.umask(0o177);
  try {
    server.listen(path);
  } finally {
    process.umask(previous);
  }
}

function serve(socket: Socket, handler: IpcHandler, logger: Logger): void {
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
  socket.on('error', (err) => logger.debug({ err: errorText(err) }, 'local IPC connection error'));
  socket.setEncoding('utf8');
  let buffer = '';
  /** A request is being answered: reading is paused until its answer has left. */
  let answering = false;
  /** The client half-closed: the connection ends once every request read was answered. */
  let clientEnded = false;
  /** An overlong request was refused: nothing more of this connection is read or run. */
  let refused = false;

  const answerAll = async (): Promise<void> => {
    answering = true;
    socket.pause();
    let newline: number;
    while (!refused && (newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.trim() === '') continue;
      const flushed = await answer(socket, line, handler, logger);
      if (!flushed && socket.writable) await drainedOrClosed(socket);
    }
    answering = false;
    if (clientEnded) socket.end();
    else socket.resume();
  };

  socket.on('data', (chunk: string) => {
    if (refused) return;
    buffer += chunk;
    if (buffer.length > MAX_IPC_LINE_BYTES) {
      refused = true;
      buffer = '';
      reply(socket, {
        ok: false,
        code: 'E_BAD_REQUEST',
        message: `request too long (over ${MAX_IPC_LINE_BYTES} bytes)`,
      });
      socket.end();
      return;
    }
    if (!answering && buffer.includes('\n')) void answerAll();
  });
  socket.on('end', () => {
    clientEnded = true;
    if (!answering) socket.end();
  });
}

/** Resolves once the socket's write buffer drained, or it closed (no listener left behind). */
function drainedOrClosed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/** Answers one request line; false when its answer waits in the socket's buffer. */
async function answer(
  socket: Socket,
  line: string,
  handler: IpcHandler,
  logger: Logger,
): Promise<boolean> {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch {
    return reply(socket, { ok: false, code: 'E_BAD_REQUEST', message: 'the request is not JSON' });
  }
  let response: IpcResponse;
  try {
    response = await handler(request);
  } catch (err) {
    logger.error({ err: errorText(err) }, 'local IPC request failed');
    response = { ok: false, code: 'E_INTERNAL', message: `the sidecar failed: ${errorText(err)}` };
  }
  return reply(socket, response);
}

/** Writes one answer line; false when it waits in the socket's buffer (or cannot be sent). */
function reply(socket: Socket, response: IpcResponse): boolean {
  if (!socket.writable) return true;
  return socket.write(`${JSON.stringify(response)}\n`);
}

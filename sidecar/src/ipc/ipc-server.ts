import { once } from 'node:events';
import { chmod, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../logger';
import { errorText } from '../error-text';
import { MAX_IPC_LINE_BYTES, type IpcResponse } from './ipc-protocol';

/** An idle local connection is closed after this long. */
const IDLE_TIMEOUT_MS = 60_000;

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
 * Each connection carries newline-delimited JSON: every line is a request, answered by one line.
 */
export async function startIpcServer(
  path: string,
  handler: IpcHandler,
  logger: Logger,
): Promise<IpcServer> {
  await rm(path, { force: true });
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    serve(socket, handler, logger);
  });
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
  let buffer = '';
  let queue: Promise<void> = Promise.resolve();
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    if (buffer.length > MAX_IPC_LINE_BYTES) {
      reply(socket, {
        ok: false,
        code: 'E_BAD_REQUEST',
        message: `request too long (over ${MAX_IPC_LINE_BYTES} bytes)`,
      });
      socket.end();
      buffer = '';
      return;
    }
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.trim() === '') continue;
      // Requests of one connection are answered in order.
      queue = queue.then(() => answer(socket, line, handler, logger));
    }
  });
}

async function answer(
  socket: Socket,
  line: string,
  handler: IpcHandler,
  logger: Logger,
): Promise<void> {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch {
    reply(socket, { ok: false, code: 'E_BAD_REQUEST', message: 'the request is not JSON' });
    return;
  }
  let response: IpcResponse;
  try {
    response = await handler(request);
  } catch (err) {
    logger.error({ err: errorText(err) }, 'local IPC request failed');
    response = { ok: false, code: 'E_INTERNAL', message: `the sidecar failed: ${errorText(err)}` };
  }
  reply(socket, response);
}

function reply(socket: Socket, response: IpcResponse): void {
  if (!socket.writable) return;
  socket.write(`${JSON.stringify(response)}\n`);
}

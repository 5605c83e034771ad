import { createConnection } from 'node:net';
import { errorText } from '../error-text';
import { ipcResponseSchema, type IpcRequest, type IpcResponse } from './ipc-protocol';

/** The sidecar could not be reached: not running, socket missing, or not ours to talk to. */
export class SidecarUnreachableError extends Error {
  constructor(
    readonly socketPath: string,
    readonly code: string,
  ) {
    super(
      code === 'ENOENT' || code === 'ECONNREFUSED'
        ? `the sidecar is not running (no one listens on ${socketPath})`
        : code === 'EACCES' || code === 'EPERM'
          ? `cannot reach the sidecar at ${socketPath} (${code}): its socket is another user's; run this as the sidecar's user`
          : `cannot reach the sidecar at ${socketPath} (${code})`,
    );
    this.name = 'SidecarUnreachableError';
  }
}

/**
 * Sends one request to the running sidecar's IPC socket and resolves with its answer. Rejects
 * with {@link SidecarUnreachableError} when nothing listens there, or with an Error when the
 * answer is missing (`timeoutMs`), cut short or malformed.
 */
export function ipcRequest(
  socketPath: string,
  request: IpcRequest,
  timeoutMs: number,
): Promise<IpcResponse> {
  return new Promise<IpcResponse>((resolve, reject) => {
    const socket = createConnection(socketPath);
    let buffer = '';
    let settled = false;
    const finish = (error: Error | undefined, response?: IpcResponse): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error !== undefined) reject(error);
      else resolve(response as IpcResponse);
    };
    const timer = setTimeout(
      () => finish(new Error(`no answer from the sidecar within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const newline = buffer.indexOf('\n');
      if (newline < 0) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(buffer.slice(0, newline));
      } catch (err) {
        finish(new Error(`the sidecar answered something that is not JSON (${errorText(err)})`));
        return;
      }
      const checked = ipcResponseSchema.safeParse(parsed);
      if (!checked.success) finish(new Error('the sidecar answered something unexpected'));
      else finish(undefined, checked.data);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'error';
      if (['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK', 'ENOTDIR', 'EPERM'].includes(code)) {
        finish(new SidecarUnreachableError(socketPath, code));
      } else finish(new Error(`talking to the sidecar failed: ${errorText(err)}`));
    });
    socket.once('close', () =>
      finish(new Error('the sidecar closed the connection without answering')),
    );
  });
}

import { once } from 'node:events';
import { stat, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { testLogger } from '../test-support/logger';
import { makeTempDir } from '../test-support/temp-dir';
import { SidecarUnreachableError, ipcRequest } from './ipc-client';
import type { IpcResponse } from './ipc-protocol';
import { startIpcServer, type IpcServer } from './ipc-server';

let dir: string;
let cleanup: () => Promise<void>;
let server: IpcServer | undefined;

beforeEach(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  await cleanup();
});

/** A server answering every request with what the test says, recording the requests. */
async function listen(
  answer: (request: unknown) => IpcResponse = () => ({ ok: true, taskId: 't1' }),
): Promise<{ path: string; requests: unknown[] }> {
  const path = join(dir, 'sidecar.sock');
  const requests: unknown[] = [];
  server = await startIpcServer(
    path,
    async (request) => {
      requests.push(request);
      return answer(request);
    },
    testLogger(),
  );
  return { path, requests };
}

/** Sends raw text and resolves with the first answer line. */
async function rawExchange(path: string, text: string): Promise<unknown> {
  const socket = createConnection(path);
  await once(socket, 'connect');
  socket.write(text);
  let buffer = '';
  socket.setEncoding('utf8');
  for await (const chunk of socket) {
    buffer += chunk as string;
    if (buffer.includes('\n')) break;
  }
  socket.destroy();
  return JSON.parse(buffer.slice(0, buffer.indexOf('\n')));
}

describe('local IPC', () => {
  it('creates its socket owner-only (0600)', async () => {
    const { path } = await listen();
    const info = await stat(path);
    expect(info.isSocket()).toBe(true);
    expect(info.mode & 0o777).toBe(0o600);
  });

  it('replaces a socket file left by a dead sidecar, and removes its own on close', async () => {
    const path = join(dir, 'sidecar.sock');
    await writeFile(path, 'stale');
    await listen();
    expect((await stat(path)).isSocket()).toBe(true);
    await server?.close();
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('answers a request line with one response line', async () => {
    const { path, requests } = await listen();
    await expect(ipcRequest(path, { type: 'done', result: { a: 1 } }, 5000)).resolves.toEqual({
      ok: true,
      taskId: 't1',
    });
    expect(requests).toEqual([{ type: 'done', result: { a: 1 } }]);
  });

  it('answers several requests of one connection in order', async () => {
    let n = 0;
    const { path } = await listen(() => ({ ok: true, taskId: `t${++n}` }));
    const socket = createConnection(path);
    await once(socket, 'connect');
    socket.write('{"type":"status"}\n{"type":"status"}\n');
    socket.setEncoding('utf8');
    let buffer = '';
    for await (const chunk of socket) {
      buffer += chunk as string;
      if (buffer.split('\n').length > 2) break;
    }
    socket.destroy();
    expect(
      buffer
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as unknown),
    ).toEqual([
      { ok: true, taskId: 't1' },
      { ok: true, taskId: 't2' },
    ]);
  });

  it('answers E_BAD_REQUEST to a line that is not JSON', async () => {
    const { path, requests } = await listen();
    await expect(rawExchange(path, 'hello\n')).resolves.toEqual({
      ok: false,
      code: 'E_BAD_REQUEST',
      message: 'the request is not JSON',
    });
    expect(requests).toEqual([]);
  });

  it('tells the client when no sidecar listens', async () => {
    const path = join(dir, 'sidecar.sock');
    await expect(ipcRequest(path, { type: 'status' }, 5000)).rejects.toBeInstanceOf(
      SidecarUnreachableError,
    );
    // A socket file nobody listens on (a sidecar killed with -9).
    const stale = await listen();
    await server?.close();
    await writeFile(stale.path, '');
    await expect(ipcRequest(stale.path, { type: 'status' }, 5000)).rejects.toMatchObject({
      name: 'SidecarUnreachableError',
    });
  });
});

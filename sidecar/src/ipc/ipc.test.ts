import { once } from 'node:events';
import { stat, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { testLogger } from '../test-support/logger';
import { makeTempDir } from '../test-support/temp-dir';
import { SidecarUnreachableError, ipcRequest } from './ipc-client';
import { MAX_IPC_LINE_BYTES, type IpcResponse } from './ipc-protocol';
import { MAX_IPC_CONNECTIONS, startIpcServer, type IpcServer } from './ipc-server';

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
  answer: (request: unknown) => IpcResponse | Promise<IpcResponse> = () => ({
    ok: true,
    taskId: 't1',
  }),
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

/** Everything the server sends on a connection until it closes it. */
async function readToClose(socket: Socket): Promise<string> {
  let text = '';
  socket.setEncoding('utf8');
  for await (const chunk of socket) text += chunk as string;
  return text;
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

  it('answers a client that half-closes after its request, then closes the connection', async () => {
    // `nc -N` / `socat` / a script's shutdown(SHUT_WR); the answer is not ready at once
    const { path, requests } = await listen(async () => {
      await new Promise((resolve) => setTimeout(resolve, 100)); // a durable write, say
      return { ok: true, taskId: 't1' };
    });
    const socket = createConnection(path);
    await once(socket, 'connect');
    socket.end('{"type":"done","result":1}\n');
    expect(await readToClose(socket)).toBe('{"ok":true,"taskId":"t1"}\n');
    expect(requests).toEqual([{ type: 'done', result: 1 }]);
  });

  it('runs nothing more of a connection whose request was too long', async () => {
    const { path, requests } = await listen();
    const socket = createConnection({ path, allowHalfOpen: true });
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    socket.setEncoding('utf8');
    socket.write('a'.repeat(MAX_IPC_LINE_BYTES + 10));
    const [refusal] = (await once(socket, 'data')) as [string];
    expect(JSON.parse(refusal) as unknown).toEqual({
      ok: false,
      code: 'E_BAD_REQUEST',
      message: expect.stringContaining('too long') as unknown,
    });
    // the rest of that line, then a request: neither is run (the old server ran the request
    // within a few milliseconds; nothing can, once the connection was refused)
    socket.write('aaa\n{"type":"done","result":"after the refusal"}\n');
    await new Promise((resolve) => setTimeout(resolve, 300));
    socket.end();
    expect(await readToClose(socket)).toBe('');
    expect(requests).toEqual([]);
  });

  it('reads no further requests of a client that does not read its answers', async () => {
    // one request at a time: the next is read once the answer has left, so the client's own
    // socket holds it back instead of this process buffering every answer
    let gate: (() => void) | undefined;
    const blocked = new Promise<void>((resolve) => (gate = resolve));
    let n = 0;
    const { path, requests } = await listen(async () => {
      if (++n === 3) await blocked;
      return { ok: true, taskId: `t${n}` };
    });
    const socket = createConnection(path);
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    socket.pause();
    const count = 50_000;
    const sent = new Promise<void>((resolve) =>
      socket.write('{"type":"status"}\n'.repeat(count), () => resolve()),
    );
    // While the third request is being answered the server reads nothing: 900 KB cannot all leave
    // the client (the old server read them all into memory while it answered).
    const settled = await Promise.race([
      sent.then(() => 'all read by the server'),
      new Promise((resolve) => setTimeout(() => resolve('held back'), 500)),
    ]);
    expect(settled).toBe('held back');
    gate?.();
    socket.resume();
    let answers = 0;
    let buffer = '';
    socket.setEncoding('utf8');
    for await (const chunk of socket) {
      buffer += chunk as string;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      answers += lines.length;
      if (answers >= count) break;
    }
    socket.destroy();
    expect(answers).toBe(count);
    expect(requests).toHaveLength(count);
  });

  it(`closes a connection beyond ${MAX_IPC_CONNECTIONS} open at once`, async () => {
    const { path } = await listen();
    const open: Socket[] = [];
    try {
      for (let i = 0; i < MAX_IPC_CONNECTIONS; i++) {
        const socket = createConnection(path);
        open.push(socket);
        await once(socket, 'connect');
      }
      // each of them still answered
      const last = open[open.length - 1];
      last?.write('{"type":"status"}\n');
      await once(last as Socket, 'data');
      const extra = createConnection(path);
      extra.on('error', () => undefined);
      open.push(extra);
      await once(extra, 'close');
    } finally {
      for (const socket of open) socket.destroy();
    }
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

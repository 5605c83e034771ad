import WebSocket from 'ws';

/**
 * The inspector's WebSocket URL a process started with `--inspect=127.0.0.1:0` printed
 * ("Debugger listening on ws://..."), from its output.
 */
export function inspectorUrl(output: string): string {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(output)?.[1];
  if (!url) throw new Error('the process printed no inspector URL (started without --inspect?)');
  return url;
}

/**
 * The V8 heap in use (MB) after full garbage collections, read through the inspector protocol:
 * what a leak leaves behind, where RSS right after a burst also counts memory V8 or malloc has
 * not given back yet.
 */
export async function heapUsedAfterGcMb(url: string): Promise<number> {
  const socket = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  let nextId = 0;
  const call = (method: string, params: object = {}): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = ++nextId;
      const onMessage = (data: WebSocket.RawData): void => {
        const message = JSON.parse((data as Buffer).toString('utf8')) as {
          id?: number;
          result?: unknown;
          error?: { message: string };
        };
        if (message.id !== id) return;
        socket.off('message', onMessage);
        if (message.error) reject(new Error(`${method}: ${message.error.message}`));
        else resolve(message.result);
      };
      socket.on('message', onMessage);
      socket.send(JSON.stringify({ id, method, params }));
    });
  try {
    // twice: objects with finalizers or weak references are freed by the second one
    await call('HeapProfiler.collectGarbage');
    await call('HeapProfiler.collectGarbage');
    const result = (await call('Runtime.evaluate', {
      expression: 'process.memoryUsage().heapUsed',
      returnByValue: true,
    })) as { result: { value: number } };
    return result.result.value / (1024 * 1024);
  } finally {
    socket.close();
  }
}

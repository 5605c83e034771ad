import type { Redis } from 'ioredis';

/**
 * Marks the reply of every command `client` sends as handled, so that a failure nobody waits for
 * is not an unhandled promise rejection. For the Socket.IO adapter's connections (`pub`, `sub`):
 * the adapter sends commands without handling their replies (`publish`, and `unsubscribe` /
 * `punsubscribe` when Socket.IO closes), and when a stop closes the connections while Redis does
 * not answer (`Hub.close`) each of them fails `Connection is closed`, one error line apiece
 * (`process-guards.ts`), or a failed test for an in-process replica. A caller that awaits a reply
 * still gets its failure; the connection's own errors are logged by its `error` listener.
 */
export function absorbUnheardFailures(client: Redis): void {
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    const reply = send(...args);
    if (reply instanceof Promise) reply.catch(() => undefined);
    return reply;
  }) as Redis['sendCommand'];
}

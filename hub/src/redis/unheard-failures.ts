import type { Redis } from 'ioredis';

/**
 * Marks the reply of every command `client` sends as handled, so that a failure nobody waits for
 * is not an unhandled promise rejection, and tells `onFailure` of each failure (by command name;
 * the caller picks what it counts: replies some caller does handle are reported too). For the
 * Socket.IO adapter's connections (`pub`, `sub`): the adapter sends commands without handling
 * their replies (`publish`, and `unsubscribe` / `punsubscribe` when Socket.IO closes), and when a
 * stop closes the connections while Redis does not answer (`Hub.close`) each of them fails
 * `Connection is closed`, one error line apiece (`process-guards.ts`), or a failed test for an
 * in-process replica. A caller that awaits a reply still gets its failure; the connection's own
 * errors are logged by its `error` listener.
 */
export function absorbUnheardFailures(
  client: Redis,
  onFailure: (command: string, err: unknown) => void,
): void {
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    const reply = send(...args);
    if (reply instanceof Promise) {
      reply.catch((err: unknown) => onFailure(args[0]?.name ?? 'unknown', err));
    }
    return reply;
  }) as Redis['sendCommand'];
}

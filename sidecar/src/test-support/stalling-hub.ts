import { EventEmitter, once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import { AGENT_NAMESPACE } from '@agentcom/shared';

/**
 * A hub replica that accepts the websocket but holds the `/agent` handshake, as one that lost
 * Redis does: its handshake middleware answers only the handshakes `answers` picks, and Socket.IO
 * closes a connection that joined no namespace within `connectTimeout` (45 s unless told).
 */
export class StallingHub extends EventEmitter<{ handshake: [number] }> {
  handshakes = 0;
  private readonly http = createServer();
  private readonly io: Server;

  constructor(options: { answers?: (handshake: number) => boolean; connectTimeout?: number } = {}) {
    super();
    const answers = options.answers ?? (() => false);
    this.io = new Server(this.http, {
      transports: ['websocket'],
      connectTimeout: options.connectTimeout ?? 45_000,
    });
    this.io.of(AGENT_NAMESPACE).use((_socket, next) => {
      this.handshakes++;
      const handshake = this.handshakes;
      if (answers(handshake)) next();
      this.emit('handshake', handshake);
    });
  }

  get url(): string {
    return `http://127.0.0.1:${(this.http.address() as AddressInfo).port}`;
  }

  async start(): Promise<void> {
    this.http.listen(0, '127.0.0.1');
    await once(this.http, 'listening');
  }

  /** Resolves once the hub has seen `count` handshakes. */
  async handshake(count: number): Promise<void> {
    while (this.handshakes < count) await once(this, 'handshake');
  }

  /** Closes the websocket of every connection that joined `/agent`, as a network cut would. */
  cutConnections(): void {
    for (const socket of this.io.of(AGENT_NAMESPACE).sockets.values()) socket.conn.close();
  }

  async stop(): Promise<void> {
    await this.io.close();
  }
}

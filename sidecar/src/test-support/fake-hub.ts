import { EventEmitter, once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server, type Socket } from 'socket.io';
import {
  AGENT_NAMESPACE,
  handshakeAuthSchema,
  type ClientEventName,
  type ClientToServerEvents,
  type HandshakeAuth,
  type ServerToClientEvents,
} from '@agentcom/shared';

export type HubSideSocket = Socket<ClientToServerEvents, ServerToClientEvents>;

export interface ReceivedEvent {
  event: ClientEventName;
  message: Record<string, unknown>;
  socket: HubSideSocket;
}

/** Decides the ack of one client event: an ack, `'no-ack'` to leave it unanswered, or undefined for `ok`. */
export type Responder = (received: ReceivedEvent) => Record<string, unknown> | 'no-ack' | undefined;

const CLIENT_EVENTS: ClientEventName[] = [
  'task:accept',
  'task:progress',
  'task:log',
  'task:complete',
  'task:fail',
  'agent:heartbeat',
  'agent:drain',
  'agent:resume',
];

/**
 * A scripted hub for the sidecar's tests: a real Socket.IO server on a free port (namespace
 * `/agent`, websocket), recording every handshake and event and acking them as the test says.
 * It is not the hub: the real one is tested end-to-end in test/e2e.
 */
export class FakeHub extends EventEmitter<{
  connection: [HubSideSocket, HandshakeAuth];
  event: [ReceivedEvent];
}> {
  readonly handshakes: HandshakeAuth[] = [];
  readonly received: ReceivedEvent[] = [];
  /** Refuse the next handshakes with this `connect_error` code (while set). */
  refuseWith: string | undefined;
  respond: Responder = () => undefined;
  private io: Server | undefined;
  private http: HttpServer | undefined;
  private port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts listening (again, on the same port after {@link stop}). */
  async start(): Promise<void> {
    const http = createServer();
    const io = new Server(http, { transports: ['websocket'] });
    const nsp = io.of(AGENT_NAMESPACE);
    nsp.use((socket, next) => {
      const parsed = handshakeAuthSchema.safeParse(socket.handshake.auth);
      const code = this.refuseWith ?? (parsed.success ? undefined : 'E_VALIDATION');
      if (code !== undefined) {
        next(
          Object.assign(new Error(`refused: ${code}`), {
            data: { code, message: `refused: ${code}` },
          }),
        );
        return;
      }
      next();
    });
    nsp.on('connection', (raw: Socket) => {
      const socket = raw as unknown as HubSideSocket;
      const auth = handshakeAuthSchema.parse(socket.handshake.auth);
      this.handshakes.push(auth);
      for (const event of CLIENT_EVENTS) {
        raw.on(event, (message: Record<string, unknown>, ack: (res: unknown) => void) => {
          const received = { event, message, socket };
          this.received.push(received);
          this.emit('event', received);
          const answer = this.respond(received);
          if (answer === 'no-ack') return;
          ack(answer ?? defaultAck(event));
        });
      }
      this.emit('connection', socket, auth);
    });
    http.listen(this.port, '127.0.0.1');
    await once(http, 'listening');
    this.port = (http.address() as AddressInfo).port;
    this.io = io;
    this.http = http;
  }

  /** Closes every connection and stops listening, as a hub that died would. */
  async stop(): Promise<void> {
    const io = this.io;
    this.io = undefined;
    this.http = undefined;
    if (io === undefined) return;
    io.disconnectSockets(true);
    await io.close();
  }

  /** The live sockets of the agent namespace. */
  sockets(): HubSideSocket[] {
    return [...(this.io?.of(AGENT_NAMESPACE).sockets.values() ?? [])] as HubSideSocket[];
  }

  /** Resolves with the next connection accepted (or the first one, if one is already up). */
  async connection(
    options: { fresh?: boolean } = {},
  ): Promise<{ socket: HubSideSocket; auth: HandshakeAuth }> {
    const live = this.sockets()[0];
    if (!options.fresh && live !== undefined) {
      const auth = this.handshakes[this.handshakes.length - 1] as HandshakeAuth;
      return { socket: live, auth };
    }
    const [socket, auth] = (await once(this, 'connection')) as [HubSideSocket, HandshakeAuth];
    return { socket, auth };
  }

  /** Resolves with the next received event of that name matching `where`. */
  nextEvent(
    event: ClientEventName,
    where: (message: Record<string, unknown>) => boolean = () => true,
  ): Promise<ReceivedEvent> {
    return new Promise((resolve) => {
      const listener = (received: ReceivedEvent): void => {
        if (received.event !== event || !where(received.message)) return;
        this.off('event', listener);
        resolve(received);
      };
      this.on('event', listener);
    });
  }

  messages(event: ClientEventName): Array<Record<string, unknown>> {
    return this.received
      .filter((received) => received.event === event)
      .map((received) => received.message);
  }
}

function defaultAck(event: ClientEventName): Record<string, unknown> {
  if (event === 'agent:heartbeat') return { ok: true, state: 'working' };
  if (event === 'agent:drain' || event === 'agent:resume') return { ok: true, state: 'draining' };
  return { ok: true };
}

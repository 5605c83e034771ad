import WebSocket from 'ws';

/**
 * A minimal Engine.IO 4 / Socket.IO 5 client over a raw WebSocket, for the hostile-input
 * scenario: it sends exactly the text the test wrote (10,000 levels of nesting, duplicate keys,
 * `1e400`, lone surrogates, junk packets, frames over the size limit), which socket.io-client
 * cannot do because it encodes its arguments itself. Loopback only.
 */
export type RawConnectResult =
  | { kind: 'connected'; sid: string }
  | { kind: 'refused'; message: string; data: unknown }
  | { kind: 'closed'; code: number }
  | { kind: 'timeout' };

export type RawAckResult =
  { kind: 'ack'; args: unknown[] } | { kind: 'closed'; code: number } | { kind: 'timeout' };

interface SocketIoPacket {
  type: string;
  nsp: string;
  id?: number;
  data: unknown;
}

/** Parses a Socket.IO packet (the text of an Engine.IO message): `<type>[/nsp,][id][json]`. */
export function parseSocketIoPacket(text: string): SocketIoPacket {
  const type = text.charAt(0);
  let rest = text.slice(1);
  let nsp = '/';
  if (rest.startsWith('/')) {
    const comma = rest.indexOf(',');
    nsp = comma >= 0 ? rest.slice(0, comma) : rest;
    rest = comma >= 0 ? rest.slice(comma + 1) : '';
  }
  const digits = /^\d+/.exec(rest)?.[0];
  const id = digits === undefined ? undefined : Number(digits);
  if (digits !== undefined) rest = rest.slice(digits.length);
  let data: unknown;
  try {
    data = rest === '' ? undefined : (JSON.parse(rest) as unknown);
  } catch {
    data = rest;
  }
  return { type, nsp, ...(id === undefined ? {} : { id }), data };
}

export class RawSocketIo {
  /** Events the hub pushed (`task:assign`, `hub:error`, ...), in order. */
  readonly events: unknown[][] = [];
  closeCode: number | undefined;
  /** CONNECT_ERROR packets received for the namespace (refused handshakes), answered or not. */
  refusedHandshakes = 0;
  private nextId = 1;
  private readonly acks = new Map<number, (args: unknown[]) => void>();
  private connectWaiter: ((result: RawConnectResult) => void) | undefined;
  private readonly closeWaiters = new Set<(code: number) => void>();

  private constructor(
    private readonly ws: WebSocket,
    readonly namespace: string,
  ) {
    ws.on('message', (raw: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) return;
      const text = Buffer.isBuffer(raw)
        ? raw.toString('utf8')
        : Array.isArray(raw)
          ? Buffer.concat(raw).toString('utf8')
          : Buffer.from(raw).toString('utf8');
      this.onEngineMessage(text);
    });
    ws.on('close', (code: number) => {
      this.closeCode = code;
      for (const waiter of this.closeWaiters) waiter(code);
      this.closeWaiters.clear();
      this.connectWaiter?.({ kind: 'closed', code });
      this.connectWaiter = undefined;
      for (const ack of this.acks.values()) ack([]);
      this.acks.clear();
    });
    ws.on('error', () => undefined);
  }

  /** Opens the Engine.IO connection and waits for its open packet (bounded). */
  static async open(
    baseUrl: string,
    options: { localAddress?: string; namespace?: string; timeoutMs?: number } = {},
  ): Promise<RawSocketIo> {
    const url = `${baseUrl.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
    const ws = new WebSocket(url, {
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      perMessageDeflate: false,
    });
    const socket = new RawSocketIo(ws, options.namespace ?? '/agent');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('raw socket: no open packet')),
        options.timeoutMs ?? 5000,
      );
      const onMessage = (raw: WebSocket.RawData): void => {
        if (Buffer.isBuffer(raw) && raw.toString('utf8').startsWith('0')) {
          clearTimeout(timer);
          ws.off('message', onMessage);
          resolve();
        }
      };
      ws.on('message', onMessage);
      ws.once('close', () => {
        clearTimeout(timer);
        reject(new Error('raw socket: closed before open'));
      });
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    return socket;
  }

  get isOpen(): boolean {
    return this.closeCode === undefined && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a CONNECT of the namespace with `authText` as the auth JSON, verbatim. */
  connect(authText: string, timeoutMs = 5000): Promise<RawConnectResult> {
    if (!this.isOpen) return Promise.resolve({ kind: 'closed', code: this.closeCode ?? -1 });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.connectWaiter = undefined;
        resolve({ kind: 'timeout' });
      }, timeoutMs);
      this.connectWaiter = (result) => {
        clearTimeout(timer);
        resolve(result);
      };
      this.ws.send(`40${this.namespace},${authText}`);
    });
  }

  /** Sends an EVENT whose argument array is `argsText`, verbatim, with an ack id. */
  emit(argsText: string, timeoutMs = 5000): Promise<RawAckResult> {
    if (!this.isOpen) return Promise.resolve({ kind: 'closed', code: this.closeCode ?? -1 });
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.acks.delete(id);
        resolve({ kind: 'timeout' });
      }, timeoutMs);
      this.acks.set(id, (args) => {
        clearTimeout(timer);
        resolve(
          this.closeCode !== undefined && args.length === 0
            ? { kind: 'closed', code: this.closeCode }
            : { kind: 'ack', args },
        );
      });
      this.ws.send(`42${this.namespace},${id}${argsText}`);
    });
  }

  /** Sends an EVENT without an ack id. */
  emitNoAck(argsText: string): void {
    if (this.isOpen) this.ws.send(`42${this.namespace},${argsText}`);
  }

  /** Sends one WebSocket frame as is (text or binary): junk, oversize, ... */
  sendFrame(frame: string | Buffer): void {
    if (this.isOpen) this.ws.send(frame);
  }

  /** Resolves with the close code, or undefined if the connection is still open after `timeoutMs`. */
  waitClosed(timeoutMs: number): Promise<number | undefined> {
    if (this.closeCode !== undefined) return Promise.resolve(this.closeCode);
    return new Promise((resolve) => {
      const waiter = (code: number): void => {
        clearTimeout(timer);
        resolve(code);
      };
      const timer = setTimeout(() => {
        this.closeWaiters.delete(waiter);
        resolve(undefined);
      }, timeoutMs);
      this.closeWaiters.add(waiter);
    });
  }

  /**
   * Stops reading what the hub sends (`ws` pause), while it may still send: a peer that never
   * gets its acks, nor the hub's close frame, so it never answers the close.
   */
  stopReading(): void {
    this.ws.pause();
  }

  close(): void {
    this.ws.close();
  }

  /** Drops the connection at once, without a closing handshake (also one that stopped reading). */
  terminate(): void {
    this.ws.terminate();
  }

  private onEngineMessage(text: string): void {
    const engineType = text.charAt(0);
    if (engineType === '2') {
      this.ws.send('3' + text.slice(1)); // ping → pong
      return;
    }
    if (engineType !== '4') return;
    const packet = parseSocketIoPacket(text.slice(1));
    if (packet.nsp !== this.namespace) return;
    if (packet.type === '0' || packet.type === '4') {
      const waiter = this.connectWaiter;
      this.connectWaiter = undefined;
      if (packet.type === '0') {
        const sid = (packet.data as { sid?: unknown } | undefined)?.sid;
        waiter?.({ kind: 'connected', sid: typeof sid === 'string' ? sid : '' });
      } else {
        this.refusedHandshakes++;
        const body = packet.data as { message?: unknown; data?: unknown } | undefined;
        waiter?.({
          kind: 'refused',
          message: typeof body?.message === 'string' ? body.message : '',
          data: body?.data,
        });
      }
    } else if (packet.type === '3' && packet.id !== undefined) {
      const ack = this.acks.get(packet.id);
      this.acks.delete(packet.id);
      ack?.(Array.isArray(packet.data) ? (packet.data as unknown[]) : [packet.data]);
    } else if (packet.type === '2' && Array.isArray(packet.data)) {
      this.events.push(packet.data as unknown[]);
    }
  }
}

import { connect, createServer, type Socket } from 'node:net';

/**
 * One client connection through a {@link RedisProxy}, piped to its own connection to Redis. Either
 * direction can be held (what arrives is kept, in order, until {@link release}) or the pair
 * dropped (both closed, what was held lost, as a network cut loses it).
 */
export class ProxiedConnection {
  /** The name the client gave itself (`CLIENT SETNAME`, ioredis' `connectionName`), once seen. */
  name: string | undefined;
  private heldCommands: Buffer[] | undefined;
  private heldReplies: Buffer[] | undefined;

  constructor(
    readonly client: Socket,
    readonly redis: Socket,
  ) {}

  /** From now on, what Redis sends this client (replies, pub/sub messages) is held. */
  holdReplies(): void {
    this.heldReplies ??= [];
  }

  /** From now on, what this client sends Redis is held. */
  holdCommands(): void {
    this.heldCommands ??= [];
  }

  /** The bytes held so far from Redis to the client. */
  heldReplyBytes(): Buffer {
    return Buffer.concat(this.heldReplies ?? []);
  }

  /** Sends on what was held, in order, and holds nothing more. */
  release(): void {
    const commands = this.heldCommands ?? [];
    const replies = this.heldReplies ?? [];
    this.heldCommands = undefined;
    this.heldReplies = undefined;
    for (const chunk of commands) this.redis.write(chunk);
    for (const chunk of replies) this.client.write(chunk);
  }

  /** Closes both sides: what was held is lost, and the client sees its connection reset. */
  drop(): void {
    this.heldCommands = undefined;
    this.heldReplies = undefined;
    this.client.destroy();
    this.redis.destroy();
  }

  /** @internal */
  fromClient(chunk: Buffer): void {
    this.name ??= /setname\r\n\$\d+\r\n([^\r]+)\r\n/i.exec(chunk.toString('latin1'))?.[1];
    if (this.heldCommands) this.heldCommands.push(chunk);
    else this.redis.write(chunk);
  }

  /** @internal */
  fromRedis(chunk: Buffer): void {
    if (this.heldReplies) this.heldReplies.push(chunk);
    else this.client.write(chunk);
  }
}

/** A TCP proxy in front of a Redis, for tests that cut or delay one client connection. */
export interface RedisProxy {
  readonly url: string;
  /** The open connections whose client named itself `name`. */
  named(name: string): ProxiedConnection[];
  /**
   * Resolves with the first connection to send a chunk that contains `marker`, once that chunk
   * has gone on to Redis: its later commands are held until released. A command small enough
   * to come in one chunk (loopback writes of a few kB do) is then sent whole, and run.
   */
  holdCommandsAfter(marker: string): Promise<ProxiedConnection>;
  /** Releases everything held, then closes every connection and the listener. */
  close(): Promise<void>;
}

export async function startRedisProxy(redisPort: number): Promise<RedisProxy> {
  const open = new Set<ProxiedConnection>();
  const watches: Array<{ marker: string; resolve: (c: ProxiedConnection) => void }> = [];
  const server = createServer((client) => {
    client.pause();
    const redis = connect(redisPort, '127.0.0.1');
    const pair = new ProxiedConnection(client, redis);
    open.add(pair);
    const close = (): void => {
      open.delete(pair);
      client.destroy();
      redis.destroy();
    };
    client.on('error', close).on('close', close);
    redis.on('error', close).on('close', close);
    redis.on('data', (chunk: Buffer) => pair.fromRedis(chunk));
    client.on('data', (chunk: Buffer) => {
      pair.fromClient(chunk);
      const text = chunk.toString('latin1');
      const at = watches.findIndex((w) => text.includes(w.marker));
      if (at < 0) return;
      const [watch] = watches.splice(at, 1);
      pair.holdCommands();
      watch?.resolve(pair);
    });
    redis.once('connect', () => client.resume());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address !== 'object') throw new Error('proxy: no port');
  return {
    url: `redis://127.0.0.1:${address.port}`,
    named: (name) => [...open].filter((c) => c.name === name),
    holdCommandsAfter: (marker) =>
      new Promise((resolve) => {
        watches.push({ marker, resolve });
      }),
    async close() {
      for (const pair of open) {
        pair.release();
        pair.drop();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

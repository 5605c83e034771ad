import type { Socket } from 'socket.io';

/**
 * Most packets a `/ui` connection's Engine.IO socket may hold for its transport. Packets wait
 * there only while the transport's previous write is not yet taken by the kernel: the TCP send
 * buffer is full, the browser is not reading. Each is a batch of transitions or a snapshot.
 */
export const UI_BACKLOG_MAX_PACKETS = 128;
/**
 * Most bytes a `/ui` connection may have waiting on this replica: those packets, and what was
 * written to its TCP connection that the kernel did not take. Above a snapshot of thousands of
 * agents (about 400 bytes each), so a browser reading a fresh snapshot is not taken for stuck.
 */
export const UI_BACKLOG_MAX_BYTES = 8 * 1024 * 1024;

/** What one connection has waiting on this replica for its peer to read. */
export interface OutputBacklog {
  packets: number;
  bytes: number;
}

/** Engine.IO's queue of packets not yet handed to the transport (not in its typings). */
interface EngineSocketQueue {
  writeBuffer?: ReadonlyArray<{ data?: unknown }>;
}

const packetBytes = (data: unknown): number =>
  typeof data === 'string' ? data.length : Buffer.isBuffer(data) ? data.length : 0;

/**
 * The output `socket` has waiting: Engine.IO's `writeBuffer` and the TCP connection's
 * `writableLength` (the hub serves WebSocket only, so the handshake request's socket is the
 * connection's own). Stops counting bytes once over {@link UI_BACKLOG_MAX_BYTES}.
 */
export function outputBacklog(socket: Socket): OutputBacklog {
  const queue = (socket.conn as unknown as EngineSocketQueue).writeBuffer ?? [];
  let bytes = socket.request.socket?.writableLength ?? 0;
  for (const packet of queue) {
    if (bytes > UI_BACKLOG_MAX_BYTES) break;
    bytes += packetBytes(packet.data);
  }
  return { packets: queue.length, bytes };
}

/** True when `backlog` is past either limit: its peer stopped reading, or reads too slowly. */
export function backlogOverLimit(backlog: OutputBacklog): boolean {
  return backlog.packets > UI_BACKLOG_MAX_PACKETS || backlog.bytes > UI_BACKLOG_MAX_BYTES;
}

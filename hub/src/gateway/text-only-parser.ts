import { Decoder, Encoder } from 'socket.io-parser';

/**
 * Socket.IO's packet types that carry binary attachments: an event or an ack whose JSON names
 * placeholders, followed by that many binary messages.
 */
const BINARY_EVENT = '5';
const BINARY_ACK = '6';

/**
 * Socket.IO's decoder, refusing binary packets at once. The agentcom protocol is JSON only, and
 * neither the sidecar nor the `/ui` page ever sends binary; but the default decoder takes a binary
 * event of up to 10 attachments, each up to `maxHttpBufferSize`, and holds them until the last one
 * arrives, for as long as the connection lasts: about 9 × 2 MiB parked per connection. Here the
 * announcement of one (and any binary message) throws before anything is parsed or held, and
 * Socket.IO closes a connection whose decoder throws (`forced close`), as for any packet it cannot
 * decode.
 */
export class TextOnlyDecoder extends Decoder {
  constructor() {
    // no attachment allowed, should a packet ever reach the default decoding
    super({ maxAttachments: 0 });
  }

  override add(message: unknown): void {
    if (typeof message !== 'string') throw new Error('binary messages are refused');
    if (message.startsWith(BINARY_EVENT) || message.startsWith(BINARY_ACK))
      throw new Error('binary packets are refused');
    super.add(message);
  }
}

/** The Socket.IO Server's `parser` option: the standard encoder, the {@link TextOnlyDecoder}. */
export const textOnlyParser = { Encoder, Decoder: TextOnlyDecoder };

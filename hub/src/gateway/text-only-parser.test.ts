import type { Packet } from 'socket.io-parser';
import { TextOnlyDecoder } from './text-only-parser';

describe('TextOnlyDecoder', () => {
  /** What the decoder makes of one Socket.IO packet (an Engine.IO message without its `4`). */
  const decoded = (text: string): Packet[] => {
    const decoder = new TextOnlyDecoder();
    const packets: Packet[] = [];
    decoder.on('decoded', (packet) => packets.push(packet));
    decoder.add(text);
    return packets;
  };

  it('decodes the text packets of the protocol', () => {
    expect(decoded('2/agent,7["agent:heartbeat",{}]')).toEqual([
      { type: 2, nsp: '/agent', id: 7, data: ['agent:heartbeat', {}] },
    ]);
  });

  it('refuses a binary event or ack at once, before it waits for any attachment', () => {
    expect(() => decoded('51-/agent,1["task:log",{"_placeholder":true,"num":0}]')).toThrow(
      'binary packets are refused',
    );
    expect(() => decoded('61-/agent,1[{"_placeholder":true,"num":0}]')).toThrow(
      'binary packets are refused',
    );
  });

  it('refuses a binary message', () => {
    expect(() => new TextOnlyDecoder().add(Buffer.from('x'))).toThrow(
      'binary messages are refused',
    );
  });
});

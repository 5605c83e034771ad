import { clientAddress } from './handshake-limiter';

const handshake = (forwarded?: string | string[]) => ({
  address: '::ffff:10.0.0.9',
  headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded },
});

describe('clientAddress', () => {
  it('is the socket peer unless a proxy is trusted', () => {
    expect(clientAddress(handshake('198.51.100.7'), false)).toBe('10.0.0.9');
    expect(clientAddress(handshake(), true)).toBe('10.0.0.9');
  });

  it('behind a trusted proxy, is the entry the proxy appended: the last one', () => {
    // what the client sent comes first: HAProxy and nginx append the address they saw
    expect(clientAddress(handshake('203.0.113.1, 198.51.100.7'), true)).toBe('198.51.100.7');
    expect(clientAddress(handshake('198.51.100.7'), true)).toBe('198.51.100.7');
    expect(clientAddress(handshake(['203.0.113.1', '2001:db8::5']), true)).toBe('2001:db8::5');
    expect(clientAddress(handshake('::ffff:198.51.100.7'), true)).toBe('198.51.100.7');
  });

  it('ignores a last entry that is not an IP address', () => {
    for (const junk of ['', 'unknown', '198.51.100.7, x'.repeat(1000), '1.2.3.4:80', ' , ']) {
      expect(clientAddress(handshake(junk), true)).toBe('10.0.0.9');
    }
  });
});

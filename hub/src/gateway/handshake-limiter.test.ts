import { clientAddress, limitedNetwork } from './handshake-limiter';

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

describe('limitedNetwork', () => {
  it('counts an IPv6 address as its /64, however it is written; an IPv4 address as itself', () => {
    for (const address of [
      '2001:db8:1:2::1',
      '2001:0DB8:0001:0002:ffff:ffff:ffff:ffff',
      '2001:db8:1:2:0:0:0:7',
      '2001:db8:1:2::1.2.3.4',
      '2001:db8:1:2::',
      '2001:db8:1:2::1%eth0',
    ]) {
      expect(limitedNetwork(address)).toBe('2001:db8:1:2::/64');
    }
    expect(limitedNetwork('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
    expect(limitedNetwork('::1')).toBe('0:0:0:0::/64');
    expect(limitedNetwork('2001:db8::')).toBe('2001:db8:0:0::/64');
    expect(limitedNetwork('198.51.100.7')).toBe('198.51.100.7');
  });
});

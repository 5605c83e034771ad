import { REPLICA_V8_FLAGS, replicaV8Flags } from './v8-flags';

describe('the replica V8 flags', () => {
  it('turns allocation-site pretenuring off', () => {
    expect(REPLICA_V8_FLAGS).toContain('--no-allocation-site-pretenuring');
    expect(replicaV8Flags([])).toEqual(['--no-allocation-site-pretenuring']);
    expect(replicaV8Flags(['--max-old-space-size=512', '--inspect'])).toEqual([
      '--no-allocation-site-pretenuring',
    ]);
  });

  it('leaves a flag that node was started with alone, in either spelling and sense', () => {
    expect(replicaV8Flags(['--allocation-site-pretenuring'])).toEqual([]);
    expect(replicaV8Flags(['--no-allocation-site-pretenuring'])).toEqual([]);
    expect(replicaV8Flags(['--allocation_site_pretenuring'])).toEqual([]);
    expect(replicaV8Flags(['--allocation-site-pretenuring-x'])).toEqual([
      '--no-allocation-site-pretenuring',
    ]);
  });
});

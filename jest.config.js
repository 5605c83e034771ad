/** Jest runs TypeScript through @swc/jest (fast, transpile-only); `tsc --build` typechecks separately. */
const swcTs = [
  '@swc/jest',
  { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } },
];
// ESM-only packages that Jest 30 on Node 20 cannot require (plain Node 20.20 can): compiled to CJS.
const ESM_ONLY = ['content-disposition'];
const swcEsm = [
  '@swc/jest',
  { jsc: { target: 'es2022', parser: { syntax: 'ecmascript' } }, module: { type: 'commonjs' } },
];
module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.ts$': swcTs,
    [`node_modules/(${ESM_ONLY.join('|')})/.+\\.js$`]: swcEsm,
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  moduleNameMapper: { '^@agentcom/shared$': '<rootDir>/shared/src/index.ts' },
  roots: ['<rootDir>/shared/src', '<rootDir>/hub/src', '<rootDir>/sidecar/src', '<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '/test/bench/'],
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
  testTimeout: 60000,
  openHandlesTimeout: 5000,
};

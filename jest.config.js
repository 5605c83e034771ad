/** Jest runs TypeScript through @swc/jest (fast, transpile-only); `tsc --build` typechecks separately. */
const swc = [
  '@swc/jest',
  { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } },
];
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': swc },
  moduleNameMapper: { '^@agentcom/shared$': '<rootDir>/shared/src/index.ts' },
  roots: ['<rootDir>/shared/src', '<rootDir>/hub/src', '<rootDir>/sidecar/src', '<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '/test/bench/'],
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
  testTimeout: 60000,
  openHandlesTimeout: 5000,
};

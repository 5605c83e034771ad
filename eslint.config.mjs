// Type-aware lint for every package; boundaries between packages are enforced here too.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const noCrossImports = (patterns) => ({
  'no-restricted-imports': ['error', { patterns }],
});

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      '**/dist/**',
      '**/build/**',
      '.tsbuild/**',
      '.tmp/**',
      '.agentcom/**',
      'test/artifacts/**',
      'coverage/**',
      '**/*.cjs',
      '**/*.mjs',
      'jest.config.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: ['./test/tsconfig.json'], tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    files: ['shared/src/**/*.ts'],
    rules: noCrossImports([
      {
        group: ['**/hub/**', '**/sidecar/**', '@agentcom/hub', 'agentcom-sidecar'],
        message: 'shared imports nothing from hub or sidecar',
      },
      { group: ['node:*'], message: 'shared is pure TypeScript: no Node built-ins' },
    ]),
  },
  {
    files: ['hub/src/**/*.ts'],
    rules: noCrossImports([
      { group: ['**/sidecar/**', 'agentcom-sidecar'], message: 'hub never imports the sidecar' },
    ]),
  },
  {
    files: ['sidecar/src/**/*.ts'],
    rules: noCrossImports([
      { group: ['**/hub/**', '@agentcom/hub'], message: 'the sidecar never imports the hub' },
      {
        group: ['ioredis', 'bullmq'],
        message: 'agents hold no Redis credentials: the sidecar never touches Redis',
      },
    ]),
  },
  {
    files: ['**/*.test.ts', 'test/**/*.ts'],
    rules: {
      '@typescript-eslint/unbound-method': 'off',
      // jest's asymmetric matchers (expect.objectContaining, ...) are typed any
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);

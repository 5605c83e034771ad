// Bundles the sidecar CLI into one file, dist/cli.js, and the operator CLI `agentcom` into
// dist/agentcom.js (next to the --outfile), each with @agentcom/shared and every dependency
// inside: `npm install -g` then needs nothing else (npm cannot pack a workspace dependency).
// Usage: node sidecar/build.mjs [--outfile PATH]
import { build } from 'esbuild';
import { chmod } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { outfile: { type: 'string' } } });
const outfile = resolve(values.outfile ?? join(here, 'dist', 'cli.js'));

const options = {
  entryPoints: [join(here, 'src', 'cli.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  banner: { js: '#!/usr/bin/env node' },
  // shared from its TypeScript source, as ES modules: no prior `tsc --build` needed, and zod is
  // tree-shaken (through shared's CommonJS build the whole of zod would be bundled).
  alias: { '@agentcom/shared': join(here, '..', 'shared', 'src', 'index.ts') },
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
};
await build(options);
await chmod(outfile, 0o755);
// `agentcom`, the operator CLI (the HTTP API only), with the same options.
const operatorOutfile = join(dirname(outfile), 'agentcom.js');
await build({
  ...options,
  entryPoints: [join(here, 'src', 'operator-cli.ts')],
  outfile: operatorOutfile,
});
await chmod(operatorOutfile, 0o755);
// stderr: `npm pack --json` (which runs this as prepack) keeps stdout for its JSON.
console.error(`bundled ${outfile} and ${operatorOutfile}`);

// Renders docker/haproxy.cfg.template: the one source of the load balancer config for compose
// (docker/haproxy.cfg, committed, checked by a test) and for `make cluster` (loopback).
//   node scripts/haproxy-config.mjs compose > docker/haproxy.cfg
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * @param {{ bind: string, statsBind: string, servers: Array<{ name: string, address: string }>, dockerDns?: boolean }} options
 * @returns {string}
 */
export function renderHaproxyConfig({ bind, statsBind, servers, dockerDns = false }) {
  const template = readFileSync(join(root, 'docker', 'haproxy.cfg.template'), 'utf8');
  const lines = servers.map(({ name, address }) => `  server ${name} ${address} check`).join('\n');
  // compose: re-resolve hub names through Docker's DNS, so a restarted container's new IP is used
  const resolvers = dockerDns
    ? 'resolvers docker\n  nameserver dns 127.0.0.11:53\n  hold valid 5s\n'
    : '';
  return template
    .replace('{{RESOLVERS}}', resolvers)
    .replace('{{SERVER_OPTIONS}}', dockerDns ? ' resolvers docker' : '')
    .replace('{{BIND}}', bind)
    .replace('{{STATS_BIND}}', statsBind)
    .replace('{{SERVERS}}', lines);
}

/** The values compose uses: three hubs on the compose network. */
export const COMPOSE_HAPROXY = {
  bind: '*:8080',
  statsBind: '*:8404',
  servers: [1, 2, 3].map((n) => ({ name: `hub${n}`, address: `hub${n}:8080` })),
  dockerDns: true,
};

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'compose') {
  process.stdout.write(renderHaproxyConfig(COMPOSE_HAPROXY));
}

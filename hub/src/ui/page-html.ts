import { AGENTS_PAGE_SCRIPT } from './page-script';

export interface AgentsPageParams {
  /** UI session token the script presents to the `/ui` namespace (never the admin key). */
  session: string;
  /** The replica that served the page. */
  hubId: string;
  /** CSP nonce of the inline script and style. */
  nonce: string;
  /** URL of the Socket.IO browser client. */
  clientScript: string;
}

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};
const escapeHtml = (value: string): string =>
  value.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);

/** JSON that is safe inside a `<script type="application/json">` element. */
const scriptJson = (value: unknown): string =>
  JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');

/** Badge colours per agent state; the script adds `state-<name>` classes. */
const STYLE = `
:root { color-scheme: light; --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: center; gap: 16px; flex-wrap: wrap; padding: 12px 24px; background: #111827; color: #f9fafb; }
header h1 { margin: 0; font-size: 18px; font-weight: 600; }
header h1 span { color: #9ca3af; font-weight: 400; }
#summary { display: flex; gap: 10px; flex-wrap: wrap; flex: 1; }
#summary .count { display: inline-flex; align-items: center; gap: 4px; }
.status { padding: 2px 10px; border-radius: 999px; font-size: 12px; background: #374151; }
.status.live { background: #065f46; }
.status.down { background: #92400e; }
.status.expired { background: #991b1b; }
main { padding: 8px 24px 24px; display: grid; gap: 8px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 12px; overflow-x: auto; }
h2 { font-size: 15px; margin: 12px 0 8px; }
h2 small { color: var(--muted); font-weight: 400; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
#agents td.task, #agents td.task-age, #agents td.heartbeat, #events td.time, #events td.task { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
#agents td.done, #agents td.failed { font-variant-numeric: tabular-nums; }
tr[data-state="offline"] td { color: var(--muted); }
/* agents: each row a grid of its own, laid out alone, skipped while off screen (thousands of rows) */
#agents { display: block; min-width: 1110px; }
#agents thead, #agents tbody { display: block; }
#agents tr { display: grid; align-items: baseline; border-bottom: 1px solid var(--line); grid-template-columns: minmax(160px, 2fr) minmax(150px, 1.4fr) minmax(110px, 1.2fr) minmax(290px, 2.6fr) 90px minmax(90px, 1fr) 100px 60px 60px; }
#agents th, #agents td { display: block; overflow: hidden; text-overflow: ellipsis; border-bottom: 0; }
#agents tbody tr { content-visibility: auto; contain-intrinsic-size: auto 31px; }
.badge { display: inline-block; min-width: 64px; text-align: center; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; color: #fff; background: #9ca3af; }
.state-offline { background: #6b7280; }
.state-idle { background: #16a34a; }
.state-assigned { background: #f59e0b; color: #1f2937; }
.state-working { background: #2563eb; }
.state-draining { background: #7c3aed; }
.state-cooldown { background: #ea580c; }
.missed-acks { margin-left: 6px; font-size: 12px; color: #c2410c; }
.arrow { margin: 0 6px; color: var(--muted); }
.empty { color: var(--muted); margin: 8px 0 0; }
footer { padding: 0 24px 16px; color: var(--muted); font-size: 12px; }
`;

/** The whole page: markup, inline style and script, no external resource but the socket client. */
export function renderAgentsPage(params: AgentsPageParams): string {
  const nonce = escapeHtml(params.nonce);
  const boot = scriptJson({ session: params.session, hubId: params.hubId });
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>agentcom · agents</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
<header>
  <h1>agentcom <span>agents</span></h1>
  <div id="summary"></div>
  <div id="status" class="status">connecting…</div>
</header>
<main>
  <section>
    <h2>Queues</h2>
    <table id="queues">
      <thead><tr><th>queue</th><th class="num">waiting</th><th class="num">prioritized</th><th class="num">delayed</th><th class="num">active</th><th class="num">completed</th><th class="num">failed</th><th class="num">idle agents</th></tr></thead>
      <tbody></tbody>
    </table>
    <p class="empty" id="queues-empty">No queue yet.</p>
  </section>
  <section>
    <h2>Agents <small id="agent-count"></small></h2>
    <table id="agents" role="table">
      <thead role="rowgroup"><tr role="row"><th role="columnheader">agent</th><th role="columnheader">state</th><th role="columnheader">queues</th><th role="columnheader">task</th><th role="columnheader">task age</th><th role="columnheader">replica</th><th role="columnheader">heartbeat</th><th role="columnheader">done</th><th role="columnheader">failed</th></tr></thead>
      <tbody role="rowgroup"></tbody>
    </table>
    <p class="empty" id="agents-empty">No agent registered yet.</p>
  </section>
  <section>
    <h2>Transitions <small>latest 50, all replicas</small></h2>
    <table id="events">
      <thead><tr><th>time</th><th>agent</th><th>transition</th><th>reason</th><th>task</th><th>replica</th></tr></thead>
      <tbody></tbody>
    </table>
    <p class="empty" id="events-empty">No transition yet.</p>
  </section>
</main>
<footer>page served by replica <code id="served-by">${escapeHtml(params.hubId)}</code> · live over Socket.IO <code>/ui</code></footer>
<script type="application/json" id="agentcom-boot">${boot}</script>
<script src="${escapeHtml(params.clientScript)}" nonce="${nonce}"></script>
<script nonce="${nonce}">${AGENTS_PAGE_SCRIPT}</script>
</body>
</html>
`;
}

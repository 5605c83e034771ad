/**
 * The live agents page's browser script, inlined into the page (no build step). Plain ES2020
 * run as is by the browser: not type-checked, so it stays small and defensive. It never writes
 * server data as HTML (textContent only). Written without `${` and backticks: it lives in a
 * String.raw template.
 *
 * Model: `agents` (id → AgentView) and `events` (stream id → transition, newest 50) are filled by
 * snapshots (on connect, every 10 s, and soon after an unknown agent or a version gap shows up)
 * and changed between them by `transitions`, applied only when newer than the agent's version.
 */
export const AGENTS_PAGE_SCRIPT = String.raw`
(function () {
  'use strict';
  var boot = JSON.parse(document.getElementById('agentcom-boot').textContent);
  var STATES = ['offline', 'idle', 'assigned', 'working', 'draining', 'cooldown'];
  var JOB_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'];
  // transitions that end an agent's streak of ack timeouts: its answers for a pushed task, and
  // an operator's resume
  var STREAK_ENDS = ['accept', 'resume', 'fail', 'rate_limited', 'complete', 'undrain'];
  var MAX_EVENTS = 50;
  var REFRESH_MS = 10000;
  var agents = new Map();
  var rows = new Map();
  var events = new Map();
  var queues = {};
  var skew = 0;
  var renderQueued = false;
  var refreshTimer = null;

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function serverNow() { return Date.now() + skew; }
  function formatAge(since) {
    if (!since) return '\u2013';
    var s = Math.max(0, Math.floor((serverNow() - since) / 1000));
    if (s < 60) return s + 's';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    var h = Math.floor(m / 60);
    return h + 'h ' + (m % 60) + 'm';
  }
  function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = '0' + n; return n; }
  function formatTime(ms) {
    var d = new Date(ms - skew);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
  }
  function compareIds(a, b) {
    var x = a.split('-'), y = b.split('-');
    var d = Number(x[0]) - Number(y[0]);
    return d !== 0 ? d : Number(x[1]) - Number(y[1]);
  }
  function badge(state) {
    var known = STATES.indexOf(state) >= 0;
    return el('span', 'badge state-' + (known ? state : 'unknown'), state || '\u2013');
  }

  // ---- connection -------------------------------------------------------------------------
  function setStatus(kind, text) {
    var node = byId('status');
    node.className = 'status ' + kind;
    node.textContent = text;
  }
  var socket = io('/ui', { transports: ['websocket'], auth: { session: boot.session } });
  socket.on('connect', function () { setStatus('live', 'live'); });
  socket.on('disconnect', function (reason) {
    setStatus('down', 'reconnecting\u2026');
    // The server closed this socket (its replica is stopping, or the session ended): the client
    // does not reconnect by itself then. A session that ended is refused on the way back in.
    if (reason === 'io server disconnect') setTimeout(function () { socket.connect(); }, 1000);
  });
  socket.on('connect_error', function (err) {
    var code = err && err.data && err.data.code;
    if (code === 'E_UNAUTHORIZED') {
      setStatus('expired', 'session expired: reload the page');
    } else if (code) {
      setStatus('down', 'reconnecting\u2026');
      setTimeout(function () { socket.connect(); }, 2000);
    } else {
      setStatus('down', 'reconnecting\u2026');
    }
  });
  socket.on('snapshot', applySnapshot);
  socket.on('transitions', function (list) {
    if (!Array.isArray(list)) return;
    list.forEach(applyTransition);
    scheduleRender();
  });

  function requestSnapshot() {
    if (!socket.connected) return;
    socket.timeout(5000).emit('snapshot:get', function (err, snapshot) {
      if (err || !snapshot || snapshot.error) { refreshSoon(1500); return; }
      applySnapshot(snapshot);
    });
  }
  function refreshSoon(ms) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(function () { refreshTimer = null; requestSnapshot(); }, ms);
  }
  setInterval(requestSnapshot, REFRESH_MS);

  // ---- model ------------------------------------------------------------------------------
  function applySnapshot(s) {
    if (!s || !Array.isArray(s.agents)) return;
    skew = s.serverTime - Date.now();
    byId('served-by').textContent = s.hubId;
    setStatus('live', 'live \u00b7 replica ' + s.hubId);
    var present = new Set();
    s.agents.forEach(function (view) {
      present.add(view.agentId);
      var current = agents.get(view.agentId);
      // A transition newer than this read already arrived: keep it, take the rest.
      if (current && current.version > view.version) {
        current.lastHeartbeatAt = view.lastHeartbeatAt;
        return;
      }
      agents.set(view.agentId, view);
    });
    agents.forEach(function (view, id) {
      var recent = view.touchedAt && Date.now() - view.touchedAt < 5000;
      if (!present.has(id) && !recent) agents.delete(id);
    });
    queues = s.queues || {};
    (s.events || []).forEach(addEvent);
    scheduleRender();
  }

  function addEvent(t) {
    if (events.has(t.id)) return false;
    events.set(t.id, t);
    if (events.size > MAX_EVENTS) {
      var ids = Array.from(events.keys()).sort(compareIds);
      for (var i = 0; i < ids.length - MAX_EVENTS; i++) events.delete(ids[i]);
    }
    return events.has(t.id);
  }

  function applyTransition(t) {
    if (!t || typeof t.agent !== 'string') return;
    addEvent(t);
    var a = agents.get(t.agent);
    if (!a) {
      a = { agentId: t.agent, state: t.from || 'offline', queues: [], labels: {}, tasksDone: 0, tasksFailed: 0, version: 0 };
      agents.set(t.agent, a);
      refreshSoon(250);
    }
    if (t.version <= a.version) return;
    if (a.version > 0 && t.version !== a.version + 1) refreshSoon(250);
    a.version = t.version;
    a.state = t.to;
    a.touchedAt = Date.now();
    // the streak of ack timeouts (missedAcks, as the hub counts it: a miss of a pushed task by a
    // connected agent; an answer of the agent or an operator's resume ends it)
    if (t.reason === 'ack_timeout' && t.to === 'cooldown' && t.task) {
      a.missedAcks = (a.missedAcks || 0) + 1;
    } else if (STREAK_ENDS.indexOf(t.reason) >= 0 && (t.from === 'assigned' || t.reason === 'undrain')) {
      delete a.missedAcks;
    }
    if (t.reason === 'complete') a.tasksDone += 1;
    if (t.reason === 'fail') a.tasksFailed += 1;
    if (t.to === 'assigned' || t.to === 'working') {
      if (t.task && (!a.currentTask || a.currentTask.taskId !== t.task)) {
        a.currentTask = { taskId: t.task, queue: '', since: t.at };
      } else if (a.currentTask && t.reason === 'accept') {
        a.currentTask.since = t.at;
      }
    } else {
      delete a.currentTask;
    }
    if (t.to === 'offline') delete a.hubId;
    else if (t.reason === 'connect' || t.reason === 'resume') {
      a.hubId = t.hub;
      a.lastHeartbeatAt = t.at;
    }
  }

  // ---- view -------------------------------------------------------------------------------
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(function () { renderQueued = false; render(); });
  }

  function render() {
    renderAgents();
    renderQueues();
    renderEvents();
    renderSummary();
  }

  function agentRow(id) {
    var row = rows.get(id);
    if (row) return row;
    row = el('tr');
    row.dataset.agent = id;
    ['agent', 'state', 'queues', 'task', 'task-age', 'replica', 'heartbeat', 'done', 'failed'].forEach(function (name) {
      row.appendChild(el('td', name));
    });
    rows.set(id, row);
    return row;
  }
  function cell(row, name) { return row.querySelector('td.' + name); }
  function setText(node, text) { text = String(text); if (node.textContent !== text) node.textContent = text; }

  function renderAgents() {
    var body = byId('agents').tBodies[0];
    var ids = Array.from(agents.keys()).sort();
    rows.forEach(function (row, id) { if (!agents.has(id)) { row.remove(); rows.delete(id); } });
    ids.forEach(function (id) {
      var a = agents.get(id);
      var row = agentRow(id);
      row.dataset.state = a.state;
      row.dataset.version = String(a.version);
      var name = cell(row, 'agent');
      setText(name, id);
      var labels = Object.keys(a.labels || {}).map(function (k) { return k + '=' + a.labels[k]; });
      name.title = labels.join(', ');
      var stateCell = cell(row, 'state');
      // the ack timeouts the agent let pass in a row, when it has a streak (its cooldown doubles)
      var missed = a.missedAcks ? 'missed acks: ' + a.missedAcks : '';
      if (stateCell.dataset.shown !== a.state + ' ' + missed) {
        stateCell.dataset.shown = a.state + ' ' + missed;
        stateCell.textContent = '';
        stateCell.appendChild(badge(a.state));
        if (missed) stateCell.appendChild(el('span', 'missed-acks', missed));
      }
      setText(cell(row, 'queues'), (a.queues || []).join(', ') || '\u2013');
      var task = a.currentTask;
      setText(cell(row, 'task'), task ? task.taskId : '\u2013');
      var taskAge = cell(row, 'task-age');
      taskAge.dataset.since = task && task.since ? String(task.since) : '';
      var hb = cell(row, 'heartbeat');
      hb.dataset.since = a.lastHeartbeatAt ? String(a.lastHeartbeatAt) : '';
      setText(cell(row, 'replica'), a.hubId || '\u2013');
      setText(cell(row, 'done'), a.tasksDone);
      setText(cell(row, 'failed'), a.tasksFailed);
      body.appendChild(row);
    });
    byId('agents-empty').hidden = ids.length > 0;
    tick();
  }

  function renderQueues() {
    var body = byId('queues').tBodies[0];
    body.textContent = '';
    var names = Object.keys(queues).sort();
    names.forEach(function (name) {
      var counts = queues[name] || {};
      var idle = 0;
      agents.forEach(function (a) { if (a.state === 'idle' && (a.queues || []).indexOf(name) >= 0) idle++; });
      var row = el('tr');
      row.dataset.queue = name;
      row.appendChild(el('td', 'queue', name));
      JOB_STATES.forEach(function (state) {
        row.appendChild(el('td', 'num ' + state, counts[state] === undefined ? '\u2013' : counts[state]));
      });
      row.appendChild(el('td', 'num idle', idle));
      body.appendChild(row);
    });
    byId('queues-empty').hidden = names.length > 0;
  }

  function renderEvents() {
    var body = byId('events').tBodies[0];
    body.textContent = '';
    Array.from(events.values()).sort(function (a, b) { return compareIds(b.id, a.id); }).forEach(function (t) {
      var row = el('tr');
      row.dataset.id = t.id;
      row.dataset.agent = t.agent;
      row.dataset.reason = t.reason;
      row.dataset.task = t.task;
      row.appendChild(el('td', 'time', formatTime(t.at)));
      row.appendChild(el('td', 'agent', t.agent));
      var move = el('td', 'move');
      move.appendChild(badge(t.from));
      move.appendChild(el('span', 'arrow', '\u2192'));
      move.appendChild(badge(t.to));
      row.appendChild(move);
      row.appendChild(el('td', 'reason', t.reason));
      row.appendChild(el('td', 'task', t.task || '\u2013'));
      row.appendChild(el('td', 'replica', t.hub));
      body.appendChild(row);
    });
    byId('events-empty').hidden = events.size > 0;
  }

  function renderSummary() {
    var counts = {};
    agents.forEach(function (a) { counts[a.state] = (counts[a.state] || 0) + 1; });
    var box = byId('summary');
    box.textContent = '';
    STATES.forEach(function (state) {
      if (!counts[state]) return;
      var item = el('span', 'count');
      item.appendChild(badge(state));
      item.appendChild(el('b', null, counts[state]));
      box.appendChild(item);
    });
    setText(byId('agent-count'), agents.size);
  }

  function tick() {
    document.querySelectorAll('td[data-since]').forEach(function (node) {
      setText(node, node.dataset.since ? formatAge(Number(node.dataset.since)) : '\u2013');
    });
  }
  setInterval(tick, 1000);
  render();
})();
`;

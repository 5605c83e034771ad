/**
 * The live agents page's browser script, inlined into the page (no build step). Plain ES2020
 * run as is by the browser: not type-checked, so it stays small and defensive. It never writes
 * server data as HTML (textContent only). Written without `${` and backticks: it lives in a
 * String.raw template.
 *
 * Model: `agents` (id → AgentView) and `events` (stream id → transition, newest 50) are filled by
 * snapshots (on connect, every 10 s, and soon after an unknown agent or a version gap shows up)
 * and changed between them by `transitions`, applied only when newer than the agent's version.
 *
 * View: rendered at most every RENDER_INTERVAL_MS (in an animation frame), and only what changed.
 * Each agent's row keeps its cells and the text last written to each, so a render writes only
 * the cells whose text changed; a transition renders its agent's row alone, and a new agent's
 * row is inserted at its sorted place (the others are not touched). The queue and state counts
 * take one pass over the agents. With thousands of agents the page re-rendered and re-appended
 * every row on each batch of transitions and froze (test/browser/agents-page-scale.browser.test.ts);
 * the rows are grid boxes with `content-visibility: auto` (page-html.ts), so a change lays out
 * its own row, not the whole table, and rows off screen cost next to nothing.
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
  var RENDER_INTERVAL_MS = 250;
  var AGENT_CELLS = ['agent', 'state', 'queues', 'task', 'task-age', 'replica', 'heartbeat', 'done', 'failed'];
  var agents = new Map();
  var events = new Map();
  var queues = new Map();
  var skew = 0;
  var renderQueued = false;
  var refreshTimer = null;
  // what the next render must redo: these agents' rows, the counts, the transitions table
  var dirtyAgents = new Set();
  var countsDirty = true;
  var eventsDirty = true;

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

  // fresh: a snapshot read after the request (this page saw what its snapshot cannot explain);
  // otherwise the replica may answer with the one its tabs share, read a moment before
  function requestSnapshot(fresh) {
    if (!socket.connected) return;
    socket.timeout(5000).emit('snapshot:get', { fresh: fresh === true }, function (err, snapshot) {
      if (err || !snapshot || snapshot.error) { refreshSoon(1500, fresh); return; }
      applySnapshot(snapshot);
    });
  }
  var refreshFresh = false;
  function refreshSoon(ms, fresh) {
    if (fresh) refreshFresh = true;
    if (refreshTimer) return;
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      var asFresh = refreshFresh;
      refreshFresh = false;
      requestSnapshot(asFresh);
    }, ms);
  }
  setInterval(function () { requestSnapshot(false); }, REFRESH_MS);

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
      dirtyAgents.add(view.agentId);
      if (current && current.version > view.version) {
        current.lastHeartbeatAt = view.lastHeartbeatAt;
        return;
      }
      agents.set(view.agentId, view);
    });
    agents.forEach(function (view, id) {
      var recent = view.touchedAt && Date.now() - view.touchedAt < 5000;
      if (!present.has(id) && !recent) {
        agents.delete(id);
        dirtyAgents.add(id);
      }
    });
    queues = new Map();
    var counts = s.queues || {};
    Object.keys(counts).forEach(function (name) { queues.set(name, counts[name] || {}); });
    countsDirty = true;
    (s.events || []).forEach(addEvent);
    scheduleRender();
  }

  function addEvent(t) {
    if (events.has(t.id)) return false;
    events.set(t.id, t);
    eventsDirty = true;
    if (events.size > MAX_EVENTS) {
      var ids = Array.from(events.keys()).sort(compareIds);
      for (var i = 0; i < ids.length - MAX_EVENTS; i++) events.delete(ids[i]);
    }
    return events.has(t.id);
  }

  function applyTransition(t) {
    if (!t || typeof t.agent !== 'string') return;
    addEvent(t);
    dirtyAgents.add(t.agent);
    var a = agents.get(t.agent);
    if (!a) {
      a = { agentId: t.agent, state: t.from || 'offline', queues: [], labels: {}, tasksDone: 0, tasksFailed: 0, version: 0 };
      agents.set(t.agent, a);
      refreshSoon(250, true);
    }
    if (t.version <= a.version) return;
    if (a.version > 0 && t.version !== a.version + 1) refreshSoon(250, true);
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
  // at most one render per RENDER_INTERVAL_MS, in an animation frame: a batch of transitions
  // arrives with each read of the events stream, many a second under load
  var lastRenderAt = 0;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    var wait = Math.max(0, lastRenderAt + RENDER_INTERVAL_MS - Date.now());
    setTimeout(function () {
      requestAnimationFrame(function () { renderQueued = false; lastRenderAt = Date.now(); render(); });
    }, wait);
  }

  function render() {
    if (dirtyAgents.size > 0) {
      var changed = dirtyAgents;
      dirtyAgents = new Set();
      renderAgents(changed);
      countsDirty = true;
    }
    if (countsDirty) {
      countsDirty = false;
      var counts = countAgents();
      renderQueues(counts.idleByQueue);
      renderSummary(counts.byState);
    }
    if (eventsDirty) {
      eventsDirty = false;
      renderEvents();
    }
  }

  // Writes only what differs from what is shown: each write is a DOM mutation, and a layout.
  function setText(node, text) { text = String(text); if (node.textContent !== text) node.textContent = text; }
  function setHidden(node, hidden) { if (node.hidden !== hidden) node.hidden = hidden; }
  function setCell(row, name, text) {
    text = String(text);
    if (row.shown[name] === text) return;
    row.shown[name] = text;
    var cell = row.cells[name];
    var node = cell.firstChild;
    if (node && node.nodeType === 3 && !node.nextSibling) node.data = text; // the same text node
    else cell.textContent = text;
  }
  function setData(row, name, value) {
    value = String(value);
    if (row.shown['data-' + name] === value) return;
    row.shown['data-' + name] = value;
    row.tr.dataset[name] = value;
  }
  // Puts body's rows in the order of list, moving or inserting only the rows out of place (rows
  // not in list must be removed before).
  function placeRows(body, list) {
    var at = body.firstChild;
    list.forEach(function (node) {
      if (node === at) at = at.nextSibling;
      else body.insertBefore(node, at);
    });
  }

  // agents: a row per agent, in id order (order), each with its cells and the text they show
  var agentRows = new Map();
  var order = [];

  function sortedIndex(list, id) {
    var lo = 0, hi = list.length;
    while (lo < hi) {
      var mid = (lo + hi) >>> 1;
      if (list[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function insertAgentRow(body, id) {
    var row = { tr: el('tr'), cells: {}, shown: {}, taskSince: 0, heartbeatSince: 0 };
    row.tr.dataset.agent = id;
    row.tr.setAttribute('role', 'row');
    AGENT_CELLS.forEach(function (name) {
      row.cells[name] = row.tr.appendChild(el('td', name));
      row.cells[name].setAttribute('role', 'cell');
    });
    var at = sortedIndex(order, id);
    var next = at < order.length ? agentRows.get(order[at]).tr : null;
    order.splice(at, 0, id);
    agentRows.set(id, row);
    body.insertBefore(row.tr, next);
    return row;
  }

  function removeAgentRow(id, row) {
    var at = sortedIndex(order, id);
    if (order[at] === id) order.splice(at, 1);
    agentRows.delete(id);
    row.tr.remove();
  }

  function renderAgents(changed) {
    var body = byId('agents').tBodies[0];
    changed.forEach(function (id) {
      var a = agents.get(id);
      var row = agentRows.get(id);
      if (!a) {
        if (row) removeAgentRow(id, row);
        return;
      }
      renderAgent(row || insertAgentRow(body, id), a);
    });
    setHidden(byId('agents-empty'), agents.size > 0);
  }

  function renderAgent(row, a) {
    setData(row, 'state', a.state);
    setData(row, 'version', a.version);
    setCell(row, 'agent', a.agentId);
    // the whole id (a long one is cut short) and the labels
    var labels = Object.keys(a.labels || {}).map(function (k) { return k + '=' + a.labels[k]; });
    var title = [a.agentId].concat(labels).join('\n');
    if (row.shown.title !== title) { row.shown.title = title; row.cells.agent.title = title; }
    // the ack timeouts the agent let pass in a row, when it has a streak (its cooldown doubles)
    var missed = a.missedAcks ? 'missed acks: ' + a.missedAcks : '';
    var state = a.state + ' ' + missed;
    if (row.shown.state !== state) {
      row.shown.state = state;
      var stateCell = row.cells.state;
      stateCell.textContent = '';
      stateCell.appendChild(badge(a.state));
      if (missed) stateCell.appendChild(el('span', 'missed-acks', missed));
    }
    setCell(row, 'queues', (a.queues || []).join(', ') || '\u2013');
    var task = a.currentTask;
    setCell(row, 'task', task ? task.taskId : '\u2013');
    row.taskSince = task && task.since ? task.since : 0;
    row.heartbeatSince = a.lastHeartbeatAt || 0;
    setCell(row, 'replica', a.hubId || '\u2013');
    setCell(row, 'done', a.tasksDone);
    setCell(row, 'failed', a.tasksFailed);
    renderAges(row);
  }

  function renderAges(row) {
    setCell(row, 'task-age', row.taskSince ? formatAge(row.taskSince) : '\u2013');
    setCell(row, 'heartbeat', row.heartbeatSince ? formatAge(row.heartbeatSince) : '\u2013');
  }

  // one pass over the agents for the summary and the idle agents of each queue
  function countAgents() {
    var byState = new Map();
    var idleByQueue = new Map();
    agents.forEach(function (a) {
      byState.set(a.state, (byState.get(a.state) || 0) + 1);
      if (a.state !== 'idle') return;
      (a.queues || []).forEach(function (name) { idleByQueue.set(name, (idleByQueue.get(name) || 0) + 1); });
    });
    return { byState: byState, idleByQueue: idleByQueue };
  }

  var queueRows = new Map();
  function renderQueues(idleByQueue) {
    var body = byId('queues').tBodies[0];
    queueRows.forEach(function (row, name) {
      if (!queues.has(name)) { row.tr.remove(); queueRows.delete(name); }
    });
    var names = Array.from(queues.keys()).sort();
    placeRows(body, names.map(function (name) {
      var row = queueRows.get(name);
      if (!row) {
        row = { tr: el('tr'), cells: {}, shown: {} };
        row.tr.dataset.queue = name;
        row.tr.appendChild(el('td', 'queue', name));
        JOB_STATES.forEach(function (state) {
          row.cells[state] = row.tr.appendChild(el('td', 'num ' + state));
        });
        row.cells.idle = row.tr.appendChild(el('td', 'num idle'));
        queueRows.set(name, row);
      }
      var counts = queues.get(name);
      JOB_STATES.forEach(function (state) {
        var n = Object.prototype.hasOwnProperty.call(counts, state) ? counts[state] : undefined;
        setCell(row, state, n === undefined ? '\u2013' : n);
      });
      setCell(row, 'idle', idleByQueue.get(name) || 0);
      return row.tr;
    }));
    setHidden(byId('queues-empty'), names.length > 0);
  }

  var eventRows = new Map();
  function eventRow(t) {
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
    return row;
  }
  function renderEvents() {
    var body = byId('events').tBodies[0];
    eventRows.forEach(function (row, id) {
      if (!events.has(id)) { row.remove(); eventRows.delete(id); }
    });
    var newestFirst = Array.from(events.values()).sort(function (a, b) { return compareIds(b.id, a.id); });
    placeRows(body, newestFirst.map(function (t) {
      var row = eventRows.get(t.id);
      if (!row) { row = eventRow(t); eventRows.set(t.id, row); }
      return row;
    }));
    setHidden(byId('events-empty'), events.size > 0);
  }

  var summaryItems = new Map();
  function renderSummary(byState) {
    var box = byId('summary');
    var shown = [];
    STATES.forEach(function (state) {
      var n = byState.get(state) || 0;
      var item = summaryItems.get(state);
      if (!n) {
        if (item) { item.node.remove(); summaryItems.delete(state); }
        return;
      }
      if (!item) {
        item = { node: el('span', 'count'), count: el('b') };
        item.node.appendChild(badge(state));
        item.node.appendChild(item.count);
        summaryItems.set(state, item);
      }
      setText(item.count, n);
      shown.push(item.node);
    });
    placeRows(box, shown);
    setText(byId('agent-count'), agents.size);
  }

  // the ages change every second; rows off screen cost little (content-visibility: auto)
  function tick() { agentRows.forEach(renderAges); }
  setInterval(tick, 1000);
  render();
})();
`;

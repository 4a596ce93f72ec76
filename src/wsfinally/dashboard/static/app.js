// The wsfinally dashboard: one websocket feed (./feed), hand-drawn SVG charts, no libraries.
'use strict';

const REASON_COLORS = {
  client_closed: '#2f9e6e', server_closed: '#4b7bd8', connection_lost: '#d9534f',
  heartbeat_timeout: '#e08a2c', idle_timeout: '#8d99ae', protocol_error: '#a4508b',
  message_too_big: '#c2407a', slow_consumer: '#b8860b', rate_limited: '#6f42c1',
  handler_error: '#e03131', server_shutdown: '#495057', cancelled: '#868e96', node_lost: '#17a2b8',
};
const BIN = 5;            // seconds per bar of the endings chart
const MIN_WINDOW = 120;   // seconds the charts span at least
const MAX_LATEST = 100;   // rows of the endings table
const SVG = 'http://www.w3.org/2000/svg';

const state = {
  history: [], open: new Map(), openNow: 0, seq: 0, snapshotSeq: 0, rtt: null, totals: {}, refused: {}, opened: 0,
};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fmtDuration(s) {
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function fmtTime(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

function reasonBadge(td, reason) {
  const span = document.createElement('span');
  span.className = 'reason';
  span.style.background = REASON_COLORS[reason] || '#666';
  span.textContent = reason;
  td.textContent = '';
  td.appendChild(span);
}

// -- tables -------------------------------------------------------------------------------

function endingRow(e, fresh) {
  const tr = document.createElement('tr');
  tr.dataset.id = e.id;
  tr.dataset.reason = e.reason;
  tr.dataset.code = String(e.code);
  if (fresh) tr.className = 'new';
  cell(tr, fmtTime(e.t));
  cell(tr, e.id, 'id');
  cell(tr, e.peer, 'peer');
  cell(tr, e.route, 'route');
  reasonBadge(cell(tr, '', 'reason-cell'), e.reason);
  cell(tr, String(e.code), 'code');
  cell(tr, e.clean ? 'yes' : 'no', 'clean');
  cell(tr, fmtDuration(e.duration), 'duration');
  return tr;
}

function addEnding(e, fresh) {
  const body = $('endings').tBodies[0];
  body.insertBefore(endingRow(e, fresh), body.firstChild);
  while (body.rows.length > MAX_LATEST) body.deleteRow(body.rows.length - 1);
}

function renderOpen() {
  const body = $('open').tBodies[0];
  body.textContent = '';
  for (const c of state.open.values()) {
    const tr = document.createElement('tr');
    tr.dataset.id = c.id;
    cell(tr, c.id, 'id');
    cell(tr, c.peer, 'peer');
    cell(tr, c.route, 'route');
    cell(tr, fmtDuration(c.age), 'age');
    body.appendChild(tr);
  }
}

function setOpen(rows) {
  state.open = new Map(rows.map((r) => [r.id, r]));
  renderOpen();
}

// -- numbers ------------------------------------------------------------------------------

function renderNumbers(openNow) {
  $('open-now').textContent = String(openNow);
  $('opened').textContent = String(state.opened);
  const ended = Object.values(state.totals).reduce((a, b) => a + b, 0);
  $('ended').textContent = String(ended);
  const refused = Object.entries(state.refused);
  $('refused').textContent = String(refused.reduce((a, [, n]) => a + n, 0));
  $('refused-by').textContent = refused.map(([k, n]) => `${k} ${n}`).join(' · ');
}

// -- charts -------------------------------------------------------------------------------

function frame(svg) {
  const w = Math.max(svg.clientWidth || 600, 200);
  const h = Math.max(svg.clientHeight || 150, 80);
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.textContent = '';
  return { w, h, pad: { l: 36, r: 8, t: 8, b: 18 } };
}

function yAxis(svg, f, max) {
  const { w, h, pad } = f;
  for (const frac of [0, 0.5, 1]) {
    const y = pad.t + (h - pad.t - pad.b) * (1 - frac);
    svg.appendChild(el('line', { x1: pad.l, x2: w - pad.r, y1: y, y2: y, class: 'grid' }));
    const v = max * frac;
    svg.appendChild(el('text', { x: pad.l - 4, y: y + 3, 'text-anchor': 'end' },
      v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1)));
  }
}

function xLabels(svg, f, t0, t1) {
  const { w, h, pad } = f;
  svg.appendChild(el('text', { x: pad.l, y: h - 4 }, fmtTime(t0)));
  svg.appendChild(el('text', { x: w - pad.r, y: h - 4, 'text-anchor': 'end' }, fmtTime(t1)));
}

function drawOpen() {
  const svg = $('open-chart');
  const f = frame(svg);
  const data = state.history;
  if (!data.length) return;
  const { w, h, pad } = f;
  const max = Math.max(1, ...data.map((s) => s.open));
  const t1 = data[data.length - 1].t;
  const t0 = Math.min(data[0].t, t1 - MIN_WINDOW);
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v / max) * (h - pad.t - pad.b);
  yAxis(svg, f, max);
  const pts = data.map((s) => `${x(s.t).toFixed(1)},${y(s.open).toFixed(1)}`);
  svg.appendChild(el('polygon', {
    points: `${x(data[0].t)},${y(0)} ${pts.join(' ')} ${x(t1)},${y(0)}`, class: 'area',
  }));
  svg.appendChild(el('polyline', { points: pts.join(' '), class: 'line' }));
  xLabels(svg, f, t0, t1);
}

function drawEndings() {
  const svg = $('endings-chart');
  const f = frame(svg);
  const data = state.history;
  const seen = new Set();
  if (data.length) {
    const { w, h, pad } = f;
    const t1 = data[data.length - 1].t;
    const first = Math.min(data[0].t, t1 - MIN_WINDOW + 1);
    const t0 = first - (first % BIN);
    const nbins = Math.floor((t1 - t0) / BIN) + 1;
    const bins = Array.from({ length: nbins }, () => ({}));
    for (const s of data) {
      const b = bins[Math.floor((s.t - t0) / BIN)];
      for (const [r, n] of Object.entries(s.ended || {})) { b[r] = (b[r] || 0) + n; seen.add(r); }
    }
    const max = Math.max(1, ...bins.map((b) => Object.values(b).reduce((a, c) => a + c, 0)));
    yAxis(svg, f, max);
    const bw = (w - pad.l - pad.r) / nbins;
    const reasons = Object.keys(REASON_COLORS);
    bins.forEach((b, i) => {
      let acc = 0;
      for (const r of reasons) {
        const n = b[r];
        if (!n) continue;
        const y0 = pad.t + (1 - (acc + n) / max) * (h - pad.t - pad.b);
        const hh = (n / max) * (h - pad.t - pad.b);
        const rect = el('rect', {
          x: (pad.l + i * bw + 0.5).toFixed(1), y: y0.toFixed(1),
          width: Math.max(bw - 1, 1).toFixed(1), height: Math.max(hh, 0.5).toFixed(1), fill: REASON_COLORS[r],
        });
        rect.appendChild(el('title', {}, `${fmtTime(t0 + i * BIN)} ${r}: ${n}`));
        svg.appendChild(rect);
        acc += n;
      }
    });
    xLabels(svg, f, t0, t1);
  }
  for (const r of Object.keys(state.totals)) seen.add(r);
  const legend = $('legend');
  legend.textContent = '';
  for (const r of Object.keys(REASON_COLORS).filter((k) => seen.has(k))) {
    const li = document.createElement('li');
    const i = document.createElement('i');
    i.style.background = REASON_COLORS[r];
    li.appendChild(i);
    li.appendChild(document.createTextNode(`${r} ${state.totals[r] || 0}`));
    legend.appendChild(li);
  }
}

function drawRtt() {
  const svg = $('rtt-chart');
  const f = frame(svg);
  const rtt = state.rtt;
  if (!rtt) return;
  const { w, h, pad } = f;
  const counts = rtt.counts;
  const total = counts.reduce((a, b) => a + b, 0);
  $('rtt-total').textContent = total ? `${total} pongs; bars: pongs per round-trip bucket (ms)` : 'no pongs yet';
  const max = Math.max(1, ...counts);
  yAxis(svg, f, max);
  const bw = (w - pad.l - pad.r) / counts.length;
  counts.forEach((n, i) => {
    const hh = (n / max) * (h - pad.t - pad.b);
    const label = i < rtt.buckets_ms.length ? `≤${rtt.buckets_ms[i]}` : `>${rtt.buckets_ms[i - 1]}`;
    const rect = el('rect', {
      x: (pad.l + i * bw + 1).toFixed(1), y: (h - pad.b - hh).toFixed(1),
      width: Math.max(bw - 2, 1).toFixed(1), height: hh.toFixed(1), class: 'bar',
    });
    rect.appendChild(el('title', {}, `${label} ms: ${n}`));
    svg.appendChild(rect);
    if (i % 2 === 0) {
      svg.appendChild(el('text', { x: (pad.l + (i + 0.5) * bw).toFixed(1), y: h - 4, 'text-anchor': 'middle' }, label));
    }
  });
}

function drawAll(openNow) {
  renderNumbers(openNow);
  drawOpen();
  drawEndings();
  drawRtt();
  const minutes = Math.round(Math.max(MIN_WINDOW, state.history.length) / 60);
  for (const s of document.querySelectorAll('.window')) s.textContent = `${minutes} min`;
}

// -- the feed -----------------------------------------------------------------------------

function applyState(msg) {
  state.totals = msg.totals;
  state.refused = msg.refused;
  state.opened = msg.opened;
  state.rtt = msg.rtt;
  state.openNow = msg.open_now;
  state.seq = msg.seq;
  setOpen(msg.open);
}

function onMessage(msg) {
  if (msg.type === 'snapshot') {
    state.history = msg.history;
    $('endings').tBodies[0].textContent = '';
    for (const e of msg.latest) addEnding(e, false);
    state.snapshotSeq = msg.seq;
    applyState(msg);
    drawAll(msg.open_now);
  } else if (msg.type === 'tick') {
    state.history.push(msg.sample);
    const cutoff = msg.sample.t - 600;
    while (state.history.length && state.history[0].t <= cutoff) state.history.shift();
    applyState(msg);
    drawAll(msg.open_now);
  } else if (msg.type === 'events') {
    for (const ev of msg.events) {
      // an event the last snapshot or tick already counted (it was queued before it)
      const counted = ev.seq <= state.seq;
      if (ev.kind === 'opened') {
        if (counted) continue;
        state.open = new Map([[ev.row.id, ev.row], ...state.open]);
        state.openNow += 1;
      } else if (ev.kind === 'ended') {
        if (!counted) {
          state.open.delete(ev.row.id);
          state.openNow = Math.max(0, state.openNow - 1);
          state.totals[ev.row.reason] = (state.totals[ev.row.reason] || 0) + 1;
        }
        if (ev.seq > state.snapshotSeq) addEnding(ev.row, true);  // else: in its table already
      }
    }
    renderOpen();
    renderNumbers(state.openNow);
  }
}

function connect(delay) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const base = location.pathname.endsWith('/') ? location.pathname : `${location.pathname}/`;
  const ws = new WebSocket(`${scheme}://${location.host}${base}feed${location.search}`);
  const status = $('status');
  ws.onopen = () => { status.dataset.state = 'live'; status.textContent = 'live'; delay = 500; };
  ws.onmessage = (e) => onMessage(JSON.parse(e.data));
  ws.onclose = (e) => {
    status.dataset.state = 'closed';
    status.textContent = `feed closed (${e.code}); reconnecting…`;
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

window.addEventListener('resize', () => drawAll(state.openNow));
connect(500);

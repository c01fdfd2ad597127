// Weir's web console: plain JavaScript and SVG, no build step. Served by the API from the
// binary (src/console.rs). Reads /api/graph, /api/tap and /api/console/*.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
// Client-side bounds: what this page holds at most.
const HISTORY_POINTS = 600;   // per component: 10 minutes at one sample a second
const MAX_WINDOWS = 30;       // topology windows and profile windows, per transform
const MAX_ROWS = 2000;        // per table
const SAMPLE_EVENTS = 20;     // events in a component's live sample

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
function fmt(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(digits) + 'G';
  if (a >= 1e6) return (n / 1e6).toFixed(digits) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(digits) + 'k';
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(digits);
}
function fmtSecs(s) {
  if (s === null || s === undefined) return '–';
  if (s === Infinity) return '>10s';
  return s < 1 ? (s * 1000).toFixed(0) + 'ms' : s.toFixed(2) + 's';
}
async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}
function setStatus(text) { $('status').textContent = text; }
const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

// ---------------------------------------------------------------------------------------
// Navigation: one view at a time; a view's polling runs only while it is shown, so a
// closed console (or another view) costs the server nothing.
const views = {};
let current = null;
function show(name) {
  if (!views[name]) name = 'pipeline';
  if (current === name) return;
  if (current) views[current].stop();
  current = name;
  for (const s of document.querySelectorAll('.view')) s.classList.toggle('active', s.id === 'view-' + name);
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === name);
  views[name].start();
}
function poller(fn, ms) {
  let timer = null, running = false;
  const tick = async () => {
    try { await fn(); } catch (e) { setStatus(String(e.message || e)); }
    if (running) timer = setTimeout(tick, ms);
  };
  return {
    start() { if (!running) { running = true; tick(); } },
    stop() { running = false; clearTimeout(timer); },
  };
}

let componentsInfo = null;
async function components() {
  if (!componentsInfo) componentsInfo = (await getJson('/api/console/components')).components;
  return componentsInfo;
}

// A feed of /api/console/feed/NAME, read incrementally (`after`).
function feed(name, onEvents) {
  let next = null;
  return async () => {
    const q = next ? '?after=' + (next - 1) : '';
    const r = await getJson('/api/console/feed/' + name + q);
    if (next !== null && r.next < next) next = null; // restarted
    next = r.next;
    onEvents(r, r.events);
    return r;
  };
}

// ---------------------------------------------------------------------------------------
// Pipeline view
const history = new Map(); // id -> [{t, rin, rout, errors, discarded, fill}]
let graphData = null;
let selected = null;
let sampleAbort = null;

function layered(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n, 0]));
  for (let i = 0; i < nodes.length; i++) {
    for (const e of edges) {
      if (depth.has(e.from) && depth.has(e.to)) depth.set(e.to, Math.max(depth.get(e.to), depth.get(e.from) + 1));
    }
  }
  const cols = new Map();
  for (const n of nodes) {
    const d = depth.get(n);
    if (!cols.has(d)) cols.set(d, []);
    cols.get(d).push(n);
  }
  return { depth, cols };
}

function drawPipeline() {
  const svg = $('pipeline-graph');
  clear(svg);
  if (!graphData) return;
  const ids = graphData.components.map((c) => c.id);
  const { depth, cols } = layered(ids, graphData.edges);
  const W = 200, H = 70, GX = 70, GY = 24;
  const pos = new Map();
  let maxRows = 0;
  for (const [d, list] of cols) {
    list.forEach((id, i) => pos.set(id, { x: 20 + d * (W + GX), y: 20 + i * (H + GY) }));
    maxRows = Math.max(maxRows, list.length);
  }
  svg.setAttribute('width', 40 + cols.size * (W + GX));
  svg.setAttribute('height', Math.max(480, 40 + maxRows * (H + GY)));
  for (const e of graphData.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    svg.append(el('svg:path', { class: 'edge', d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}` },
      el('svg:title', {}, e.output ? `${e.from}.${e.output} → ${e.to}` : `${e.from} → ${e.to}`)));
  }
  for (const c of graphData.components) {
    const p = pos.get(c.id);
    const rate = c.kind === 'sink' ? c.received_events_per_sec : c.sent_events_per_sec;
    const fill = c.buffer && c.buffer.max_events ? c.buffer.events / c.buffer.max_events : null;
    const g = el('svg:g', {
      class: `node ${c.kind}` + (c.id === selected ? ' selected' : '') + ((c.errors_total ?? 0) > 0 ? ' failing' : ''),
      'data-id': c.id, transform: `translate(${p.x},${p.y})`,
      on: { click: () => selectComponent(c.id) },
    });
    g.append(el('svg:rect', { width: W, height: H }));
    g.append(el('svg:text', { class: 'title', x: 8, y: 16 }, c.id));
    g.append(el('svg:text', { x: 8, y: 30 }, `${c.kind} · ${c.type}`));
    const total = c.kind === 'sink' ? c.received_events : c.sent_events;
    g.append(el('svg:text', { class: 'rate', x: 8, y: 46 }, `${fmt(rate)} ev/s · ${fmt(total ?? 0)} events`));
    g.append(el('svg:text', { x: 8, y: 61 },
      `err ${fmt(c.errors_total ?? 0)} · disc ${fmt(c.discarded_events ?? 0)}` + (fill === null ? '' : ` · buf ${(fill * 100).toFixed(0)}%`)));
    svg.append(g);
  }
}

function spark(values, label) {
  const w = 340, h = 40;
  const max = Math.max(1e-9, ...values);
  const pts = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * w},${h - 2 - (v / max) * (h - 4)}`).join(' ');
  return [el('div', {}, `${label}: ${fmt(values[values.length - 1] ?? 0)} (max ${fmt(max === 1e-9 ? 0 : max)})`),
    el('svg:svg', { class: 'spark', width: w, height: h }, el('svg:polyline', { points: pts }))];
}

function drawDetail() {
  const box = $('pipeline-detail');
  const metrics = $('pipeline-metrics');
  if (!metrics || !selected) return;
  clear(metrics);
  const h = history.get(selected) || [];
  metrics.append(...spark(h.map((p) => p.rin), 'events in/s'));
  metrics.append(...spark(h.map((p) => p.rout), 'events out/s'));
  metrics.append(...spark(h.map((p) => p.errors), 'errors (total)'));
  metrics.append(...spark(h.map((p) => p.discarded), 'discarded (total)'));
  if (h.some((p) => p.fill !== null)) metrics.append(...spark(h.map((p) => (p.fill ?? 0) * 100), 'buffer fill %'));
  box.dataset.points = String(h.length);
}

async function selectComponent(id) {
  selected = id;
  drawPipeline();
  const info = (await components()).find((c) => c.id === id) || {};
  const box = $('pipeline-detail');
  clear(box);
  box.append(el('h3', {}, id),
    el('dl', {}, el('dt', {}, 'kind'), el('dd', {}, info.kind ?? ''), el('dt', {}, 'type'), el('dd', {}, info.type ?? ''),
      el('dt', {}, 'inputs'), el('dd', {}, (info.inputs || []).join(', ') || '–')),
    el('h3', {}, 'Configuration'),
    el('pre', { id: 'pipeline-config' }, info.config && info.config.text ? info.config.text
      : '(not shown' + (info.config && info.config.hidden ? ': ' + info.config.hidden : '') + ')'),
    el('h3', {}, 'Metrics (this page, last 10 minutes)'), el('div', { id: 'pipeline-metrics' }),
    el('h3', {}, 'Live sample ', el('button', { on: { click: () => liveSample(id, info.kind) } }, 'again')),
    el('pre', { id: 'pipeline-sample' }, 'waiting for events…'));
  drawDetail();
  liveSample(id, info.kind);
}

// Reads up to SAMPLE_EVENTS events of a component from /api/tap (its output; a sink's input).
async function liveSample(id, kind) {
  if (sampleAbort) sampleAbort.abort();
  const abort = new AbortController();
  sampleAbort = abort;
  const out = $('pipeline-sample');
  const which = kind === 'sink' ? 'inputs_of' : 'outputs_of';
  const lines = [];
  try {
    const r = await fetch(`/api/tap?${which}=${encodeURIComponent(id)}&limit=${SAMPLE_EVENTS}`, { signal: abort.signal });
    if (!r.ok) { out.textContent = (await r.json()).error || 'HTTP ' + r.status; return; }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line) lines.push(line);
      }
      if (sampleAbort === abort) out.textContent = lines.map((l) => JSON.stringify(JSON.parse(l), null, 1)).join('\n');
    }
  } catch (e) {
    if (e.name !== 'AbortError') out.textContent = String(e);
  }
}

const pipelinePoll = poller(async () => {
  graphData = await getJson('/api/graph');
  const t = Date.now();
  for (const c of graphData.components) {
    if (!history.has(c.id)) history.set(c.id, []);
    const h = history.get(c.id);
    h.push({ t, rin: c.received_events_per_sec, rout: c.sent_events_per_sec, errors: c.errors_total ?? 0,
      discarded: c.discarded_events ?? 0, fill: c.buffer && c.buffer.max_events ? c.buffer.events / c.buffer.max_events : null });
    if (h.length > HISTORY_POINTS) h.shift();
  }
  drawPipeline();
  drawDetail();
  setStatus('live · ' + new Date().toLocaleTimeString());
}, 1000);
views.pipeline = {
  start() { pipelinePoll.start(); },
  stop() { pipelinePoll.stop(); if (sampleAbort) sampleAbort.abort(); },
};

// ---------------------------------------------------------------------------------------
// Service map view
const topo = new Map(); // transform id -> [topology events], oldest first
let svcEdge = null;

function fillSelect(sel, values, labels) {
  const keep = sel.value;
  clear(sel);
  values.forEach((v, i) => sel.append(el('option', { value: v }, labels ? labels[i] : v)));
  if (values.includes(keep)) sel.value = keep;
}

function percentile(hist, q) {
  if (!hist || !hist.length) return null;
  const total = hist[hist.length - 1].count;
  if (!total) return null;
  for (const b of hist) if (b.count >= q * total) return b.le === '+Inf' ? Infinity : b.le;
  return null;
}

function edgeStats(e, secs) {
  const responses = sum(e.http_responses);
  const errors = (e.http_responses && e.http_responses['5xx']) || 0;
  const drops = sum(e.drops);
  return {
    conns: e.connections / secs, reqs: e.http_requests / secs,
    errorRatio: responses ? errors / responses : 0, drops,
    p50: percentile(e.latency_histogram, 0.5), p95: percentile(e.latency_histogram, 0.95), p99: percentile(e.latency_histogram, 0.99),
  };
}

function windowSecs(w) {
  const s = (Date.parse(w.window_end) - Date.parse(w.window_start)) / 1000;
  return s > 0 ? s : 1;
}

// Layered layout of a service map: callers left of the services they call. A node's layer
// is the longest call path to it from a node nobody calls (a cycle is broken where a
// depth-first walk meets it again); a layer of more than SVC_ROWS nodes wraps into several
// columns; within a layer, nodes are ordered by the mean position of their neighbours in the
// layers before, then after (a few sweeps), which removes most crossings. Deterministic: the
// same graph is drawn the same way in every window.
const SVC_ROWS = 10, SVC_ROW = 64, SVC_COL = 180, SVC_LAYER = 270, SVC_MARGIN = 60;
const SVC_LABELLED_EDGES = 40; // past this many edges, only the selected and troubled are labelled
function layoutServices(nodeIds, edges) {
  const ids = [...new Set(nodeIds)].sort();
  const out = new Map(ids.map((id) => [id, new Set()])), inc = new Map(ids.map((id) => [id, new Set()]));
  for (const e of edges) {
    if (!out.has(e.source) || !out.has(e.destination) || e.source === e.destination) continue;
    out.get(e.source).add(e.destination);
    inc.get(e.destination).add(e.source);
  }
  // Depth-first from the nodes nobody calls, then from any left (cycles): edges back to a
  // node on the walk's path are left out of the layering.
  const state = new Map(), forward = new Map(ids.map((id) => [id, []])), post = [];
  const visit = (v) => {
    state.set(v, 1);
    for (const w of out.get(v)) {
      if (state.get(w) === 1) continue;
      forward.get(v).push(w);
      if (!state.has(w)) visit(w);
    }
    state.set(v, 2);
    post.push(v);
  };
  for (const v of [...ids.filter((id) => inc.get(id).size === 0), ...ids]) if (!state.has(v)) visit(v);
  const layerOf = new Map(ids.map((id) => [id, 0]));
  for (const v of post.reverse()) for (const w of forward.get(v)) layerOf.set(w, Math.max(layerOf.get(w), layerOf.get(v) + 1));
  const layers = [];
  for (const id of ids) (layers[layerOf.get(id)] ||= []).push(id);
  // Order within layers: barycentres of the neighbours' positions (0..1 in their layer).
  const place = new Map();
  const index = () => layers.forEach((l) => l.forEach((id, i) => place.set(id, (i + 0.5) / l.length)));
  index();
  const reorder = (l, neighbours) => {
    const key = new Map(l.map((id) => {
      const ns = [...neighbours(id)].filter((n) => layerOf.get(n) !== layerOf.get(id));
      return [id, ns.length ? ns.reduce((a, n) => a + place.get(n), 0) / ns.length : place.get(id)];
    }));
    l.sort((a, b) => key.get(a) - key.get(b) || (a < b ? -1 : 1));
    l.forEach((id, i) => place.set(id, (i + 0.5) / l.length));
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    for (const l of layers) reorder(l, (id) => inc.get(id));
    for (const l of [...layers].reverse()) reorder(l, (id) => out.get(id));
  }
  index();
  // Coordinates: a layer's columns side by side, rows centred vertically.
  const rows = Math.min(SVC_ROWS, Math.max(1, ...layers.map((l) => l.length)));
  const height = Math.max(480, 2 * SVC_MARGIN + rows * SVC_ROW);
  const pos = new Map();
  let x = SVC_MARGIN + 40;
  for (const l of layers) {
    const cols = Math.ceil(l.length / SVC_ROWS);
    l.forEach((id, i) => {
      const col = Math.floor(i / SVC_ROWS), inCol = Math.min(SVC_ROWS, l.length - col * SVC_ROWS), row = i % SVC_ROWS;
      pos.set(id, { x: x + col * SVC_COL, y: height / 2 + (row - (inCol - 1) / 2) * SVC_ROW, layer: layerOf.get(id) });
    });
    x += (cols - 1) * SVC_COL + SVC_LAYER;
  }
  return { pos, width: Math.max(900, x - SVC_LAYER + SVC_MARGIN + 120), height };
}

// A node's label: a long id shows its workload (after the namespace), the whole id is in
// its title.
function shortLabel(id) {
  if (id.length <= 24) return id;
  const workload = id.slice(id.lastIndexOf('/') + 1);
  return workload.length <= 24 ? '…/' + workload : '…' + workload.slice(-23);
}

function drawServices() {
  const comp = $('services-component').value;
  const windows = topo.get(comp) || [];
  fillSelect($('services-window'), ['', ...windows.map((w) => w.window_end).reverse()],
    ['latest', ...windows.map((w) => new Date(w.window_end).toLocaleTimeString()).reverse()]);
  const svg = $('services-graph');
  clear(svg);
  const w = windows.find((x) => x.window_end === $('services-window').value) || windows[windows.length - 1];
  if (!w) {
    $('services-summary').textContent = comp ? 'waiting for the first window…' : 'no flow_to_topology transform in this pipeline';
    return;
  }
  const secs = windowSecs(w);
  $('services-summary').textContent = `${w.nodes.length} nodes · ${w.edges.length} edges · ${fmt(w.flows)} flows in ${fmt(secs)}s`;
  const { pos, width, height } = layoutServices(w.nodes.map((n) => n.id), w.edges);
  // Drawn at its size, scaled down to the view's width when wider (see style.css).
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.append(el('svg:defs', {}, el('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 9, markerHeight: 9, orient: 'auto-start-reverse' },
    el('svg:path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8c96a0' }))));
  const maxConn = Math.max(1e-9, ...w.edges.map((e) => e.connections + e.http_requests));
  for (const e of w.edges) {
    const a = pos.get(e.source), b = pos.get(e.destination);
    if (!a || !b) continue;
    const s = edgeStats(e, secs);
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const x1 = a.x + (dx / len) * 18, y1 = a.y + (dy / len) * 18, x2 = b.x - (dx / len) * 20, y2 = b.y - (dy / len) * 20;
    const mx = (x1 + x2) / 2 - (dy / len) * 20, my = (y1 + y2) / 2 + (dx / len) * 20;
    // The label sits two thirds along the curve, where edges fanning out of one node have
    // spread apart.
    const t = 2 / 3, lx = (1 - t) ** 2 * x1 + 2 * t * (1 - t) * mx + t * t * x2, ly = (1 - t) ** 2 * y1 + 2 * t * (1 - t) * my + t * t * y2;
    const g = el('svg:g', { class: 'svc-edge' + (s.errorRatio > 0 || s.drops > 0 ? ' errors' : '') + (svcEdge === e.id ? ' selected' : ''),
      'data-id': e.id, on: { click: () => { svcEdge = e.id; drawServices(); } } });
    g.append(el('svg:path', { d: `M${x1},${y1} Q${mx},${my} ${x2},${y2}`, 'marker-end': 'url(#arrow)',
      'stroke-width': 1 + 4 * ((e.connections + e.http_requests) / maxConn) }));
    // Two short lines; on a crowded map, only the selected edge and those in trouble are
    // labelled (the others say it in their title, on hover).
    const traffic = [`${fmt(s.conns, 2)} conn/s`], health = [];
    if (e.http_requests) traffic.push(`${fmt(s.reqs, 2)} req/s`), health.push(`${(s.errorRatio * 100).toFixed(1)}% err`, `p95 ${fmtSecs(s.p95)}`);
    if (s.drops) health.push(`${fmt(s.drops)} drops`);
    const troubled = s.errorRatio > 0 || s.drops > 0;
    if (w.edges.length <= SVC_LABELLED_EDGES || troubled || svcEdge === e.id) {
      g.append(el('svg:text', { x: lx, y: ly - (health.length ? 6 : 0), 'text-anchor': 'middle' },
        el('svg:tspan', { x: lx }, traffic.join(' · ')),
        health.length ? el('svg:tspan', { x: lx, dy: 12 }, health.join(' · ')) : null));
    }
    g.append(el('svg:title', {}, `${e.id}: ${[...traffic, ...health].join(' · ')}`));
    svg.append(g);
  }
  for (const n of w.nodes) {
    const p = pos.get(n.id);
    const g = el('svg:g', { class: 'svc-node', 'data-id': n.id, transform: `translate(${p.x},${p.y})` });
    g.append(el('svg:circle', { r: 16 }), el('svg:text', { y: 30, 'text-anchor': 'middle' }, shortLabel(n.id)), el('svg:title', {}, n.id));
    svg.append(g);
  }
  const box = $('services-detail');
  clear(box);
  const e = w.edges.find((x) => x.id === svcEdge);
  if (!e) { box.append(el('p', { class: 'hint' }, 'Select an edge.')); return; }
  const s = edgeStats(e, secs);
  const dl = el('dl', {});
  const row = (k, v) => dl.append(el('dt', {}, k), el('dd', {}, v));
  row('edge', e.id);
  row('window', `${w.window_start} – ${w.window_end}`);
  row('flows', fmt(e.flows));
  row('connections', `${fmt(e.connections)} (${fmt(s.conns, 2)}/s)`);
  row('HTTP requests', `${fmt(e.http_requests)} (${fmt(s.reqs, 2)}/s)`);
  row('error ratio (5xx)', `${(s.errorRatio * 100).toFixed(2)}%`);
  row('latency p50 / p95 / p99', `${fmtSecs(s.p50)} / ${fmtSecs(s.p95)} / ${fmtSecs(s.p99)}`);
  row('mean latency', e.latency_ns_count ? fmtSecs(e.latency_ns_sum / e.latency_ns_count / 1e9) : '–');
  row('bytes', fmt(e.bytes));
  row('DNS queries', fmt(e.dns_queries));
  box.append(el('h3', {}, 'Edge'), dl);
  for (const [title, obj] of [['Drops by reason', e.drops], ['Verdicts', e.verdicts], ['HTTP responses', e.http_responses],
    ['HTTP status', e.http_status], ['DNS rcodes', e.dns_rcodes]]) {
    if (!obj || !Object.keys(obj).length) continue;
    const t = el('dl', {});
    for (const [k, v] of Object.entries(obj)) t.append(el('dt', {}, k), el('dd', {}, fmt(v)));
    box.append(el('h3', {}, title), t);
  }
}

const topoFeed = feed('topology', (r, events) => {
  for (const { component, event } of events) {
    if (!topo.has(component)) topo.set(component, []);
    const list = topo.get(component);
    list.push(event);
    if (list.length > MAX_WINDOWS) list.shift();
  }
  fillSelect($('services-component'), r.components);
});
const servicesPoll = poller(async () => { await topoFeed(); drawServices(); }, 2000);
views.services = { start() { servicesPoll.start(); }, stop() { servicesPoll.stop(); } };
$('services-component').addEventListener('change', drawServices);
$('services-window').addEventListener('change', drawServices);

// ---------------------------------------------------------------------------------------
// Profiles view
const profiles = new Map(); // transform id -> Map(window_end -> {start, end, stacks: Map(stack -> count)})
let zoom = null; // path of the zoomed frame ("a;b;c")

function windowsOf(comp) { return profiles.get(comp) || new Map(); }

function buildTree(stacks, process) {
  const root = { name: 'all', value: 0, children: new Map() };
  for (const [stack, count] of stacks) {
    const frames = stack.split(';');
    if (process && frames[0] !== process) continue;
    root.value += count;
    let n = root;
    for (const f of frames) {
      if (!n.children.has(f)) n.children.set(f, { name: f, value: 0, children: new Map() });
      n = n.children.get(f);
      n.value += count;
    }
  }
  return root;
}

function findPath(root, path) {
  let n = root;
  for (const f of path ? path.split(';') : []) {
    n = n.children.get(f);
    if (!n) return null;
  }
  return n;
}

function hue(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return h;
}

function drawProfiles() {
  const comp = $('profiles-component').value;
  const wins = windowsOf(comp);
  const keys = [...wins.keys()].sort();
  const labels = keys.map((k) => new Date(k).toLocaleTimeString());
  fillSelect($('profiles-window'), ['', ...[...keys].reverse()], ['latest', ...[...labels].reverse()]);
  fillSelect($('profiles-base'), ['', ...[...keys].reverse()], ['the window before', ...[...labels].reverse()]);
  const svg = $('flamegraph');
  clear(svg);
  const key = $('profiles-window').value || keys[keys.length - 1];
  const baseKey = $('profiles-base').value || keys[keys.indexOf(key) - 1];
  const win = wins.get(key);
  if (!win) {
    $('profiles-summary').textContent = comp ? 'waiting for the first window…' : 'no stack_fold transform in this pipeline';
    return;
  }
  const processes = new Set();
  for (const s of win.stacks.keys()) processes.add(s.split(';')[0]);
  fillSelect($('profiles-process'), ['', ...[...processes].sort()], ['all', ...[...processes].sort()]);
  const process = $('profiles-process').value;
  const tree = buildTree(win.stacks, process);
  const diff = $('profiles-diff').checked;
  const baseWin = wins.get(baseKey);
  const base = diff && baseWin ? buildTree(baseWin.stacks, process) : null;
  const top = (zoom && findPath(tree, zoom)) || tree;
  const topPath = top === tree ? '' : zoom;
  const search = $('profiles-search').value.trim().toLowerCase();
  const width = Math.max(800, svg.parentElement.clientWidth - 4), rowH = 17;
  let depthMax = 0, matched = 0, frames = 0;
  const rects = [];
  const walk = (n, path, x, w, d) => {
    if (w < 0.5) return;
    depthMax = Math.max(depthMax, d);
    rects.push({ n, path, x, w, d });
    let cx = x;
    for (const c of [...n.children.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const cw = (c.value / n.value) * w;
      walk(c, path ? path + ';' + c.name : c.name, cx, cw, d + 1);
      cx += cw;
    }
  };
  walk(top, topPath, 0, width, 0);
  svg.setAttribute('width', width);
  svg.setAttribute('height', (depthMax + 1) * rowH + 4);
  for (const { n, path, x, w, d } of rects) {
    let fill;
    if (base) {
      const b = findPath(base, path);
      const share = n.value / Math.max(1, tree.value), bshare = b ? b.value / Math.max(1, base.value) : 0;
      const delta = Math.max(-1, Math.min(1, (share - bshare) * 5));
      fill = delta >= 0 ? `rgb(255,${Math.round(235 - 180 * delta)},${Math.round(235 - 180 * delta)})`
        : `rgb(${Math.round(235 + 180 * delta)},${Math.round(235 + 180 * delta)},255)`;
    } else {
      const h = hue(n.name);
      fill = `hsl(${10 + (h % 40)},${70 + (h % 20)}%,${55 + (h % 15)}%)`;
    }
    const isMatch = search && n.name.toLowerCase().includes(search);
    if (isMatch) matched += n.value;
    frames++;
    const g = el('svg:g', { class: 'frame' + (isMatch ? ' match' : ''), 'data-name': n.name, transform: `translate(${x},${d * rowH})`,
      on: { click: () => { zoom = path || null; drawProfiles(); } } });
    g.append(el('svg:rect', { width: w, height: rowH - 1, fill }),
      el('svg:title', {}, `${n.name}: ${fmt(n.value)} (${((n.value / Math.max(1, tree.value)) * 100).toFixed(2)}%)`));
    if (w > 40) g.append(el('svg:text', { x: 3, y: rowH - 5 }, n.name.length * 6 > w - 6 ? n.name.slice(0, Math.floor((w - 6) / 6)) + '…' : n.name));
    svg.append(g);
  }
  $('profiles-summary').textContent = `${fmt(tree.value)} samples · ${win.stacks.size} stacks · ${frames} frames drawn` +
    (search ? ` · match ${((matched / Math.max(1, tree.value)) * 100).toFixed(1)}%` : '') + (base ? ' · red: grew, blue: shrank' : '');
}

const stackFeed = feed('stacks', (r, events) => {
  for (const { component: comp, event: ev } of events) {
    if (!profiles.has(comp)) profiles.set(comp, new Map());
    const wins = profiles.get(comp);
    const key = ev.window_end || 'all';
    if (!wins.has(key)) {
      wins.set(key, { start: ev.window_start, end: ev.window_end, stacks: new Map() });
      while (wins.size > MAX_WINDOWS) wins.delete([...wins.keys()].sort()[0]);
    }
    const st = wins.get(key).stacks;
    if (wins.has(key) && typeof ev.stack === 'string') st.set(ev.stack, (st.get(ev.stack) || 0) + (ev.count || 0));
  }
  fillSelect($('profiles-component'), r.components);
});
const profilesPoll = poller(async () => { await stackFeed(); drawProfiles(); }, 2000);
views.profiles = { start() { profilesPoll.start(); }, stop() { profilesPoll.stop(); } };
for (const id of ['profiles-component', 'profiles-window', 'profiles-process', 'profiles-diff', 'profiles-base']) {
  $(id).addEventListener('change', () => { zoom = null; drawProfiles(); });
}
$('profiles-search').addEventListener('input', drawProfiles);
$('profiles-reset').addEventListener('click', () => { zoom = null; drawProfiles(); });

// ---------------------------------------------------------------------------------------
// Connections and processes
function table(name, columns) {
  const rows = [];
  let sortKey = null, sortDir = 1;
  const draw = (r) => {
    const t = $(name + '-table');
    clear(t);
    const filter = $(name + '-filter').value.trim().toLowerCase();
    const cols = columns.filter((c) => rows.some((row) => row[c] !== undefined));
    const head = el('tr', {});
    for (const c of cols) {
      head.append(el('th', { on: { click: () => { sortDir = sortKey === c ? -sortDir : 1; sortKey = c; draw(); } } },
        c + (sortKey === c ? (sortDir > 0 ? ' ▲' : ' ▼') : '')));
    }
    t.append(el('thead', {}, head));
    let shown = rows.filter((row) => !filter || cols.some((c) => String(row[c] ?? '').toLowerCase().includes(filter)));
    if (sortKey) {
      shown = [...shown].sort((a, b) => {
        const x = a[sortKey], y = b[sortKey];
        if (x === y) return 0;
        if (x === undefined || x === null) return 1;
        if (y === undefined || y === null) return -1;
        return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * sortDir;
      });
    } else {
      shown = [...shown].reverse();
    }
    const body = el('tbody', {});
    for (const row of shown.slice(0, 500)) {
      body.append(el('tr', {}, ...cols.map((c) => el('td', {}, Array.isArray(row[c]) ? row[c].join(' ') : row[c] ?? ''))));
    }
    t.append(body);
    const summary = $(name + '-summary');
    if (r) summary.textContent = r.components.length ? `${rows.length} held (of at most ${MAX_ROWS}) from ${r.components.join(', ')}` +
      (r.dropped ? ` · ${r.dropped} dropped` : '') : name === 'tcp' ? 'no ebpf_tcp source (or demo with format = "tcp_connections") in this pipeline'
      : 'no ebpf_process source (or demo with format = "process_events") in this pipeline';
  };
  const f = feed(name, (r, events) => {
    for (const { event } of events) rows.push(event);
    if (rows.length > MAX_ROWS) rows.splice(0, rows.length - MAX_ROWS);
    draw(r);
  });
  $(name + '-filter').addEventListener('input', () => draw());
  return f;
}
const tcpFeed = table('tcp', ['timestamp', 'event', 'comm', 'pid', 'direction', 'local_addr', 'local_port', 'remote_addr', 'remote_port',
  'bytes_acked', 'bytes_received', 'srtt_us', 'retransmits', 'state', 'close_reason', 'duration_secs', 'container_id']);
const processFeed = table('process', ['timestamp', 'event', 'comm', 'pid', 'ppid', 'uid', 'filename', 'argv', 'exit_code', 'signal',
  'lifetime_secs', 'cpu_secs', 'container_id']);
const tablesPoll = poller(async () => { await tcpFeed(); await processFeed(); }, 2000);
views.tables = { start() { tablesPoll.start(); }, stop() { tablesPoll.stop(); } };

// ---------------------------------------------------------------------------------------
window.addEventListener('hashchange', () => show(location.hash.slice(1)));
show(location.hash.slice(1) || 'pipeline');

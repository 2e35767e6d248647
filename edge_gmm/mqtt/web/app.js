// Live view of edge-gmm predictions, fed by server-sent events from `edge-gmm subscribe --web` (edge_gmm/mqtt/web.py).
// Device ids, labels and every other string come from the network: they are written with textContent only.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const SENSOR_STATES = ["ok", "stale", "missing"];
const CHART_W = 600, CHART_H = 56;  // the timeline's viewBox; CSS scales it to the card
const MAX_BAND_S = 5;  // a label band ends this long after its last prediction when none follows
const MIN_SPAN_S = 30;  // the timeline spans its oldest point up to the server's history_s, at least this
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const RECONNECT_MS = 2000;  // after EventSource gives up for good (it retries network errors by itself)

const view = {
  devices: new Map(),  // device id -> {last, status, receivedAt, history: [{t, seq, tasks}]}
  broker: { url: "", connected: false },
  historyS: 300,
  clockOffset: 0,  // server time - browser time, in seconds: ages and the timeline use the server's clock
};
const cards = new Map();  // device id -> the card's elements
const labelColors = new Map();  // label -> colour, in order of first appearance: the same on every card
let renderQueued = false;

function serverNow() {
  return Date.now() / 1000 + view.clockOffset;
}

// ------------------------------------------------------------------ the event stream

function connect() {
  const source = new EventSource("events");
  source.addEventListener("open", () => showStream(true));
  source.addEventListener("error", () => {
    showStream(false);
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, RECONNECT_MS);
  });
  const on = (name, handle) => source.addEventListener(name, (e) => { handle(JSON.parse(e.data)); queueRender(); });
  on("snapshot", takeSnapshot);
  on("prediction", takePrediction);
  on("status", (d) => { device(d.device_id).status = d.status; });
  on("broker", (b) => { view.broker = b; });
}

function takeSnapshot(s) {
  view.historyS = s.history_s;
  view.clockOffset = s.now - Date.now() / 1000;
  view.broker = s.broker;
  view.devices = new Map(Object.entries(s.devices).map(([id, d]) =>
    [id, { last: d.last, status: d.status, receivedAt: d.received_at, history: d.history }]));
}

function takePrediction(d) {
  const dev = device(d.device_id);
  dev.last = d.prediction;
  dev.receivedAt = d.point.t;
  dev.history.push(d.point);
  const oldest = d.point.t - view.historyS;
  while (dev.history.length && dev.history[0].t < oldest) dev.history.shift();
}

function device(id) {
  if (!view.devices.has(id)) view.devices.set(id, { last: null, status: null, receivedAt: 0, history: [] });
  return view.devices.get(id);
}

function showStream(live) {
  document.body.dataset.stream = live ? "live" : "disconnected";
  setPill(document.getElementById("stream"), live, live ? "live" : "disconnected from the server — reconnecting…");
}

function setPill(el, good, text) {
  el.textContent = text;
  el.className = "pill " + (good ? "good" : "bad");
}

// ------------------------------------------------------------------ rendering

function queueRender() {
  if (!renderQueued) {
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; render(); });
  }
}

function render() {
  const b = view.broker;
  setPill(document.getElementById("broker"), b.connected,
    `broker ${b.url}: ` + (b.connected ? "connected" : "disconnected — reconnecting…"));
  const main = document.getElementById("devices");
  document.getElementById("empty").hidden = view.devices.size > 0;
  for (const [id, card] of cards) {
    if (!view.devices.has(id)) { card.root.remove(); cards.delete(id); }
  }
  for (const id of [...view.devices.keys()].sort()) {
    if (!cards.has(id)) cards.set(id, makeCard(id));
    const card = cards.get(id);
    main.appendChild(card.root);  // moves it into sorted order
    renderCard(card, view.devices.get(id));
  }
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function makeCard(id) {
  const card = {
    root: el("section", "device"), status: el("span", "status"), reason: el("span", "reason"),
    age: el("span", "age"), model: el("div", "model"), tasks: el("div", "tasks"),
    sensors: el("ul", "sensors"), latency: el("div", "latency"),
  };
  const head = el("header");
  head.append(el("h2", "device-id", id), card.status, card.reason, card.age);
  card.root.append(head, card.model, card.tasks, card.sensors, card.latency);
  return card;
}

function renderCard(card, dev) {
  const status = dev.status || {};
  const state = status.state === "online" || status.state === "offline" ? status.state : "";
  card.status.textContent = state || "status unknown";
  card.status.className = "status " + state;
  card.reason.textContent = state === "offline" && status.reason ? `(${status.reason})` : "";
  card.age.textContent = dev.receivedAt ? `last prediction ${ago(serverNow() - dev.receivedAt)}` : "no prediction yet";
  const p = dev.last || {};
  const m = p.model || {};
  card.model.textContent = p.model ? `${m.name} ${m.version} · ${m.precision} · ${m.backend} · seq ${p.seq}` : "";
  card.tasks.replaceChildren(...Object.entries(p.tasks || {}).map(([name, r]) => taskView(name, r, dev.history)));
  card.sensors.replaceChildren(...Object.entries(p.sensors || {}).map(([name, s]) => {
    const known = SENSOR_STATES.includes(s) ? s : "unknown";
    return el("li", "sensor " + known, `${name}: ${s}`);
  }));
  card.latency.textContent = latencyText(p.latency_ms);
}

function ago(seconds) {
  return seconds < 90 ? `${Math.max(0, seconds).toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function score(v) {
  return typeof v === "number" ? v.toFixed(2) : "–";
}

function latencyText(lat) {
  if (!lat || typeof lat !== "object") return "";
  const nums = Object.values(lat).filter((v) => typeof v === "number");
  const total = typeof lat.total === "number" ? lat.total : nums.reduce((a, b) => a + b, 0);
  const infer = typeof lat.infer === "number" ? ` (infer ${lat.infer.toFixed(2)} ms)` : "";
  return nums.length ? `latency ${total.toFixed(2)} ms${infer}` : "";
}

function taskView(name, result, history) {
  const r = result || {};
  const row = el("div", "task");
  const head = el("div", "task-head");
  const label = r.label === null || r.label === undefined ? null : String(r.label);
  head.append(el("span", "task-name", name), el("span", label === null ? "label none" : "label", label ?? "undecided"),
    el("span", "score", score(r.score)));
  const points = history.filter((pt) => pt.tasks && pt.tasks[name]).map((pt) => ({ t: pt.t, ...pt.tasks[name] }));
  const span = timeSpan(points);
  row.append(head, timeline(points, span), legend(points), axis(span));
  return row;
}

// ------------------------------------------------------------------ the timeline: label bands + score line

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function labelColor(label) {
  if (!labelColors.has(label)) labelColors.set(label, PALETTE[labelColors.size % PALETTE.length]);
  return labelColors.get(label);
}

function timeSpan(points) {
  const oldest = points.length ? serverNow() - points[0].t : 0;
  return Math.min(view.historyS, Math.max(MIN_SPAN_S, oldest));
}

function timeline(points, span) {
  const now = serverNow();
  const x = (t) => Math.max(0, Math.min(CHART_W, CHART_W * (1 - (now - t) / span)));
  const chart = svg("svg", { class: "timeline", viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none" });
  points.forEach((pt, i) => {
    const end = Math.min(i + 1 < points.length ? points[i + 1].t : now, pt.t + MAX_BAND_S);
    const band = svg("rect", { class: pt.label == null ? "band none" : "band", x: x(pt.t), y: 0,
      width: Math.max(0.5, x(end) - x(pt.t)), height: CHART_H });
    if (pt.label != null) band.setAttribute("fill", labelColor(String(pt.label)));
    const title = svg("title", {});
    title.textContent = `${pt.label ?? "undecided"} ${score(pt.score)}`;
    band.appendChild(title);
    chart.appendChild(band);
  });
  const line = points.filter((pt) => typeof pt.score === "number")
    .map((pt) => `${x(pt.t).toFixed(1)},${(CHART_H - 2 - pt.score * (CHART_H - 4)).toFixed(1)}`);
  if (line.length) chart.appendChild(svg("polyline", { class: "score", points: line.join(" "), "vector-effect": "non-scaling-stroke" }));
  return chart;
}

function legend(points) {
  const list = el("ul", "legend");
  for (const label of new Set(points.filter((pt) => pt.label != null).map((pt) => String(pt.label)))) {
    const item = el("li");
    const swatch = el("span", "swatch");
    swatch.style.background = labelColor(label);  // CSSOM, which the page's CSP allows (a style attribute it would not)
    item.append(swatch, document.createTextNode(label));
    list.appendChild(item);
  }
  return list;
}

function axis(span) {
  const row = el("div", "axis");
  const start = span < 120 ? `−${Math.round(span)} s` : `−${Math.round(span / 60)} min`;
  row.append(el("span", "", start), el("span", "", "line: score · bands: label"), el("span", "", "now"));
  return row;
}

connect();
setInterval(queueRender, 1000);  // ages and the timeline move with time

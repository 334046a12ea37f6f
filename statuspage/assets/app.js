// Tributary status page: renders /status, live from /status/events.
"use strict";
const $ = (s) => document.querySelector(s);
let current = null;

function get(o, path) {
  return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), o);
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function dur(s) {
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function ago(t, now) {
  return t ? dur((now - Date.parse(t)) / 1000) + " ago" : "none yet";
}
const formats = {
  int: (v) => String(v ?? 0),
  rate: (v) => (v ?? 0).toFixed(1),
  bytes: (v) => bytes(v ?? 0),
  bool: (v) => (v ? "yes" : "no"),
  sec: (v) => (v >= 1 ? v.toFixed(1) + " s" : ((v ?? 0) * 1000).toFixed(1) + " ms"),
  dur: (v) => dur(v ?? 0),
  text: (v) => (v == null || v === "" ? "–" : String(v)),
};
function show(node, v, f) {
  node.textContent = (formats[f] || formats.text)(v);
  node.dataset.v = v == null ? "" : String(v);
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "k") e.dataset.k = v; else if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}
// cell shows st's value at path, formatted with f, in a <td>.
function cell(st, path, f) {
  const td = el("td", { k: path });
  td.dataset.f = f || "text";
  show(td, get(st, path), td.dataset.f);
  return td;
}
function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 24");
  const max = Math.max(1, ...points);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p, i) => `${(i * 120) / Math.max(1, points.length - 1)},${23 - (p / max) * 22}`).join(" "));
  svg.append(line);
  return svg;
}
function fill(sel, rows) {
  $(sel + " tbody").replaceChildren(...rows);
}
function counts(m) {
  const e = Object.entries(m || {}).filter(([, n]) => n > 0);
  return e.length ? e.map(([k, n]) => k + " " + n).join(", ") : "none";
}

function render(st) {
  current = st;
  const now = Date.parse(st.time);
  document.body.dataset.seq = st.seq;
  for (const n of document.querySelectorAll("[data-k]")) {
    if (!n.closest("tbody")) show(n, get(st, n.dataset.k), n.dataset.f);
  }
  $("#health").className = "badge " + st.health.state;
  $("#live").textContent = "updated " + new Date(now).toLocaleTimeString();
  $("#addrs").replaceChildren(...(st.identity.addrs || []).map((a) => el("div", {}, a)));
  $("#rejected").textContent = counts(st.readings.rejected);
  const q = st.storage.quota_bytes ? (100 * st.storage.used_bytes) / st.storage.quota_bytes : 0;
  $("#quota-bar").style.width = Math.min(100, q).toFixed(1) + "%";
  $("#forward-card").hidden = !st.forward;
  renderDrain(st.forward && st.forward.drain, st.forward && st.forward.holding_back);
  fill("#parts", (st.partitions || []).map((p, i) => {
    const k = "partitions." + i + ".";
    const receipts = Object.entries(p.receipts || {}).map(([r, ch]) => r.slice(-8) + ": " + Object.values(ch).map((ref) => ref.timestamp).join(" ")).join("; ");
    return el("tr", { "data-id": p.id }, cell(st, k + "id"), el("td", {}, (p.roles || []).join(", ")), cell(st, k + "rate_per_second", "rate"),
      el("td", {}, sparkline(p.rate || [])), el("td", {}, ago(p.last_message, now) + (p.held_since ? " · held for peers " + ago(p.held_since, now) : "")), cell(st, k + "peers", "int"), cell(st, k + "neighbours", "int"),
      cell(st, k + "messages_in", "int"), cell(st, k + "messages_out", "int"),
      el("td", {}, receipts || "none"), el("td", {}, counts(p.drops)));
  }));
  $("#orderers").hidden = !(st.orderers || []).length;
  $("#orderers-none").hidden = !$("#orderers").hidden;
  fill("#orderers", (st.orderers || []).map((o, i) => {
    const k = "orderers." + i + ".";
    return el("tr", {}, cell(st, k + "name"), cell(st, k + "delivered", "int"), cell(st, k + "gaps", "int"), cell(st, k + "filled", "int"), cell(st, k + "lost", "int"));
  }));
  const sn = st.streamr_network || {};
  $("#proxies-none").hidden = !!sn.configured;
  $("#proxies").hidden = !sn.configured;
  fill("#proxies", (sn.proxies || []).map((p, i) => {
    const k = "streamr_network.proxies." + i + ".";
    return el("tr", {}, cell(st, k + "url"), cell(st, k + "state"), el("td", {}, ago(p.since, now)), cell(st, k + "messages_in", "int"),
      cell(st, k + "messages_out", "int"), cell(st, k + "errors", "int"), cell(st, k + "last_error"));
  }));
  renderExplorer(st);
}

function renderDrain(d, held) {
  const box = $("#drain");
  if (!d) { box.textContent = held ? "waiting for peers" : "no backlog"; return; }
  const eta = d.eta_seconds != null ? "ETA " + dur(d.eta_seconds) : held ? "waiting for peers" : "not shrinking";
  const done = el("div", {});
  done.style.width = d.percent.toFixed(1) + "%";
  box.replaceChildren(el("div", { class: "bar" }, done),
    el("span", { id: "drain-text" }, d.percent.toFixed(0) + "% of " + d.peak + " · " + d.rate_per_second.toFixed(0) + " msg/s · " + eta));
}

// The explorer: nodes, the streams each carries, connections as a graph.
function matches(q, ...fields) {
  return !q || fields.flat().some((f) => f && String(f).toLowerCase().includes(q));
}
function renderExplorer(st) {
  const q = $("#search").value.trim().toLowerCase();
  const nodes = st.nodes || [];
  const rates = Object.fromEntries((st.partitions || []).map((p) => [p.id, p.rate_per_second]));
  fill("#nodes", nodes.map((n) => el("tr", matches(q, n.id, n.addrs, n.partitions) ? {} : { class: "dim" },
    el("td", { class: "id" }, n.id), el("td", {}, n.kind), el("td", {}, n.connected ? "yes" : "no"),
    el("td", { class: "id" }, (n.partitions || []).join(", ") || "–"), el("td", { class: "id" }, (n.addrs || []).join(" ")))));
  fill("#streams", (st.partitions || []).map((p) => {
    const carriers = nodes.filter((n) => n.kind !== "self" && (n.partitions || []).includes(p.id));
    return el("tr", matches(q, p.id, carriers.map((n) => n.id)) ? {} : { class: "dim" },
      el("td", { class: "id" }, p.id), el("td", {}, (rates[p.id] || 0).toFixed(1)), el("td", {}, carriers.length));
  }));
  drawGraph(nodes, q);
}
function drawGraph(nodes, q) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = $("#graph");
  const self = nodes.find((n) => n.kind === "self");
  const others = nodes.filter((n) => n !== self);
  const pos = new Map();
  if (self) pos.set(self.id, [0, 0]);
  others.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, others.length);
    const r = n.kind === "peer" ? 130 : 185;
    pos.set(n.id, [r * Math.cos(a), 0.9 * r * Math.sin(a)]);
  });
  const parts = [];
  for (const n of others) {
    const [x, y] = pos.get(n.id);
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1: 0, y1: 0, x2: x, y2: y, class: n.connected ? "" : "dht" }).forEach(([k, v]) => line.setAttribute(k, v));
    parts.push(line);
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n.id);
    const g = document.createElementNS(ns, "g");
    if (!matches(q, n.id, n.addrs, n.partitions)) g.setAttribute("class", "dim");
    const c = document.createElementNS(ns, "circle");
    Object.entries({ cx: x, cy: y, r: n.kind === "self" ? 12 : 8, class: n.kind }).forEach(([k, v]) => c.setAttribute(k, v));
    const title = document.createElementNS(ns, "title");
    title.textContent = n.id + "\n" + (n.partitions || []).join("\n");
    c.append(title);
    const t = document.createElementNS(ns, "text");
    Object.entries({ x: x, y: y + 22 }).forEach(([k, v]) => t.setAttribute(k, v));
    t.textContent = (n.kind === "self" ? "this gateway " : "") + "…" + n.id.slice(-6);
    g.append(c, t);
    parts.push(g);
  }
  svg.replaceChildren(...parts);
}

function route() {
  const explorer = location.hash === "#explorer";
  $("#view-status").hidden = explorer;
  $("#view-explorer").hidden = !explorer;
}
window.addEventListener("hashchange", route);
$("#search").addEventListener("input", () => current && renderExplorer(current));
route();
// With [api] keys the page is opened as /?apiKey=…; its own requests carry
// the key on (EventSource cannot send an Authorization header).
const auth = new URLSearchParams(location.search).has("apiKey")
  ? "?apiKey=" + encodeURIComponent(new URLSearchParams(location.search).get("apiKey")) : "";
fetch("/status" + auth).then((r) => r.json()).then(render).catch(() => {});
const events = new EventSource("/status/events" + auth);
events.addEventListener("status", (e) => render(JSON.parse(e.data)));
events.onerror = () => { $("#live").textContent = "disconnected: retrying…"; $("#health").className = "badge down"; };

/* gapmodel dashboard: plain JavaScript over the JSON API, figures as inline SVG.
 * The API key lives in sessionStorage and goes out as X-API-Key; the API applies roles
 * and disclosure control, the page only shows its flags. */
"use strict";

const KEY_STORE = "gapmodel.apiKey";
const SVG_NS = "http://www.w3.org/2000/svg";
// viridis, 9 stops: colour-blind safe, light end readable against white outlines
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80",
  "#5ec962", "#addc30", "#fde725"];
const NO_DATA = "#d9d9d9";
const FUNNEL_Z = { "95%": 1.959964, "99.8%": 3.090232 };

const $ = (id) => document.getElementById(id);
const state = {
  key: null, who: null, models: [], detail: null, model: null, version: null,
  tab: "map", dirty: new Set(), table: { page: 1, sort: "-undiagnosed_mean", pages: 1 },
  plan: null, disclosure: null,
};

// -- API ------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function api(path, { params, method = "GET", body, raw = false } = {}) {
  const headers = { "X-API-Key": state.key || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path + query(params), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* keep */ }
    if (response.status === 401) signOut(message);
    throw new ApiFailure(response.status, message);
  }
  return raw ? response : response.json();
}

const latest = {};

/** Starts a request for `name` (a panel, or the version shown). The check it returns turns
 * false once a newer request for the same name has started: a response that arrives late,
 * after the user moved on, must not draw over the newer one. */
function claim(name) {
  const ticket = (latest[name] || 0) + 1;
  latest[name] = ticket;
  return () => latest[name] === ticket;
}

// -- formatting ---------------------------------------------------------------------------

const intFmt = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
const num = (v) => (v === null || v === undefined ? "–" : intFmt.format(v));
const dec = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const probLabel = () => `${Math.round(100 * prob())}%`;

function suppressedText() {
  const d = state.disclosure;
  return d ? `suppressed (<${d.suppress_to + 1})` : "suppressed";
}

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.setAttribute("class", v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A summary {mean, lower, upper} as a table cell's content, honouring the row's flags. */
function summaryCell(summary, row, kind) {
  const fmt = kind === "rate" ? pct : kind === "ratio" ? dec : num;
  const s = summary || {};
  const isCount = kind === "count";
  if (isCount && (s.mean === null || s.mean === undefined) && row.suppressed) {
    return [el("span", { class: "suppressed", text: suppressedText(),
      title: "withheld: a count this small could identify people" })];
  }
  const bound = (v) => (isCount && v === null && row.suppressed ? "supp." : fmt(v));
  const approx = isCount && row.rounded && state.disclosure && state.disclosure.applied;
  const main = el("span", { class: "v" }, approx ? "≈" : "", fmt(s.mean));
  const parts = [main];
  if (approx) main.title = `rounded to the nearest ${state.disclosure.round_to}`;
  if (kind === "rate" && row.rate_flagged) {
    parts.push(el("span", { class: "flag-mark", title: "rests on a withheld count",
      text: " *" }));
  }
  if (s.lower !== undefined || s.upper !== undefined) {
    parts.push(el("span", { class: "iv", text: `${bound(s.lower)} to ${bound(s.upper)}` }));
  }
  return parts;
}

function summaryText(summary, row, kind) {
  const fmt = kind === "rate" ? pct : num;
  const s = summary || {};
  if (kind === "count" && (s.mean === null || s.mean === undefined) && row.suppressed) {
    return suppressedText();
  }
  return `${fmt(s.mean)} (${probLabel()} interval ${fmt(s.lower)} to ${fmt(s.upper)})`;
}

function setStatus(id, message, isError = false) {
  const node = $(id);
  node.textContent = message;
  node.classList.toggle("error-status", isError);
}

// -- sign in ------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  try {
    state.who = await api("/dashboard/key");
  } catch (err) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORE);
    $("login-error").textContent = err.status === 401
      ? "That key was not accepted (unknown or revoked)." : err.message;
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $("login-error").textContent = "";
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `Signed in: ${state.who.name || "key"} (${state.who.role})`;
  $("plan-denied").hidden = state.who.plans;
  $("plan-form").hidden = !state.who.plans;
  if (!state.who.plans) {
    $("plan-denied").textContent = `Outreach plans need the outreach role or higher; this `
      + `key's role is ${state.who.role}.`;
  }
  state.boundaries = (await api("/dashboard/boundaries")).levels;
  await loadModels();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  state.key = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = message || "";
  $("api-key").value = "";
}

// -- model and version ------------------------------------------------------------------------

async function loadModels() {
  state.models = await api("/v1/models");
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.name,
    text: `${m.condition || m.name} (${m.name})${m.active_version ? "" : ": no active version"}` })));
  const first = state.models.find((m) => m.active_version) || state.models[0];
  if (!first) {
    $("prov-line").textContent = "The registry has no fitted model yet.";
    return;
  }
  select.value = first.name;
  await loadVersions();
}

async function loadVersions() {
  const current = claim("version");
  const model = $("model").value;
  const versions = await api(`/v1/models/${encodeURIComponent(model)}/versions`);
  if (!current()) return;
  const select = $("version");
  const newest = [...versions].reverse();
  select.replaceChildren(...newest.map((v) => el("option", { value: v.version,
    text: `${v.version}${v.active ? " (active)" : ""}${v.gate_passed ? "" : " (failed the gate)"}` })));
  const active = versions.find((v) => v.active) || newest[0];
  if (active) select.value = active.version;
  await loadVersion(model);
}

/** Shows the version chosen in the version list; the model and version in `state` change
 * together, once its detail has arrived, so that no panel asks for one model's estimates
 * with another's version. */
async function loadVersion(model = state.model) {
  const current = claim("version");
  const version = $("version").value;
  const detail = await api(`/v1/versions/${encodeURIComponent(version)}`);
  if (!current()) return;
  state.model = model;
  state.version = version;
  state.detail = detail;
  const summary = state.detail.dataset.summary || {};
  state.levels = Object.keys(summary.levels || { area: 0 });
  state.attributes = summary.attributes || {};
  const covariates = summary.covariates
    || Object.keys(((state.detail.spec || {}).prevalence || {}).covariates || {});
  state.deciles = covariates.map((c) => `${c}_decile`);
  state.disclosure = null;
  state.table.page = 1;
  state.plan = null;
  fillSelectors();
  showProvenance();
  markAllDirty();
}

const prob = () => Number($("prob").value);

function showProvenance() {
  const d = state.detail;
  const data = d.dataset_name || (d.dataset || {}).name || "dataset";
  const gate = d.gate_passed ? "passed the convergence gate" : "FAILED the convergence gate";
  const method = d.method === "nuts" ? "" : ` Fitted by ${d.method} (approximate: for exploration only).`;
  $("prov-line").textContent = `Model ${d.model} (${d.condition || "condition not named"}), `
    + `version ${d.version}${d.active ? " (active)" : ""}, fitted ${d.created}, ${gate}. `
    + `Data snapshot: ${data}, hash ${d.dataset_hash.slice(0, 12)}.${method}`;
  const p = probLabel();
  $("interval-line").textContent = `Ranges are ${p} intervals: we are ${p} sure the true `
    + "number lies in this range, given the model and the data.";
}

function showDisclosure(response) {
  state.disclosure = response.disclosure;
  const d = response.disclosure;
  const line = $("disclosure-line");
  line.hidden = !d.applied;
  if (d.applied) {
    line.textContent = `Disclosure control applies to this key: counts of ${d.suppress_from} `
      + `to ${d.suppress_to} people are shown as "${suppressedText()}", other counts are `
      + `rounded to the nearest ${d.round_to} (marked ≈); a rate marked * rests on a withheld count.`;
  }
}

function sourceLine(id, response, extra = "") {
  $(id).textContent = `Source: model ${response.model}, version ${response.version}, data `
    + `${response.dataset_hash.slice(0, 12)}, ${response.draws} posterior draws, `
    + `${Math.round(100 * response.prob)}% intervals.${extra ? ` ${extra}` : ""}`;
}

function levelLabel(level) {
  return level.replace(/^sub_icb$/, "sub-ICB").replace(/_/g, " ").replace(/\bicb\b/gi, "ICB").replace(/\bpcn\b/gi, "PCN")
    .replace(/\bimd\b/gi, "IMD");
}

/** A group column's heading: the base level's own name for ``area``. */
function groupLabel(column) {
  return levelLabel(column === "area" && state.levels ? state.levels[0] : column);
}

function options(select, values, labels = {}, keep = true) {
  const previous = select.value;
  select.replaceChildren(...values.map((v) => el("option", { value: v,
    text: labels[v] !== undefined ? labels[v] : levelLabel(v) })));
  if (keep && values.includes(previous)) select.value = previous;
}

function fillSelectors() {
  const levels = state.levels;
  const attrs = Object.keys(state.attributes);
  const bounded = Object.keys(state.boundaries || {}).filter((l) => levels.includes(l));
  const mapLabels = Object.fromEntries(levels.map((l) => [l, `${levelLabel(l)} (${
    bounded.includes(l) ? "map" : "tiles"})`]));
  options($("map-level"), levels, mapLabels);
  if (!levels.includes($("map-level").value) || (bounded.length && !state.mapChosen)) {
    $("map-level").value = bounded[0] || levels[0];
  }
  options($("table-level"), [...levels, ...attrs, ...state.deciles]);
  options($("table-level2"), ["", ...attrs, ...levels, ...state.deciles], { "": "(nothing)" });
  options($("funnel-level"), levels);
  options($("plan-level"), levels);
  options($("equity-by"), [...attrs, ...state.deciles]);
  fillReference();
  const box = $("table-attrs");
  box.replaceChildren(...attrs.map((a) => el("div", { class: "field" },
    el("label", { for: `attr-${a}`, text: levelLabel(a) }),
    el("select", { id: `attr-${a}`, "data-attr": a },
      el("option", { value: "", text: "all" }),
      ...state.attributes[a].map((v) => el("option", { value: v, text: v }))))));
}

function fillReference() {
  const by = $("equity-by").value;
  const values = state.attributes[by] || [];
  options($("equity-ref"), ["", ...values], { "": "largest group" });
}

// -- tabs ---------------------------------------------------------------------------------

const TABS = ["map", "table", "funnel", "equity", "plan"];

function selectTab(name, focus = false) {
  state.tab = name;
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  refresh();
}

function tabKeys(event) {
  const i = TABS.indexOf(event.target.id.replace("tab-", ""));
  const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length], true);
}

function markAllDirty() {
  state.dirty = new Set(TABS);
  refresh();
}

async function refresh() {
  if (!state.version || !state.dirty.has(state.tab)) return;
  const tab = state.tab;
  state.dirty.delete(tab);
  const run = { map: drawMap, table: loadTable, funnel: drawFunnel, equity: drawEquity,
    plan: async () => {} }[tab];
  const current = claim(tab);
  try {
    await run(current);
  } catch (err) {
    if (!current()) return;
    const target = { map: "map-notes", table: "table-status", funnel: "funnel-notes",
      equity: "equity-index", plan: "plan-status" }[tab];
    setStatus(target, `Could not load: ${err.message}`, true);
  }
}

function modelPath(route) {
  return `/v1/models/${encodeURIComponent(state.model)}/${route}`;
}

// -- map ----------------------------------------------------------------------------------

function colour(t) {
  if (t === null || Number.isNaN(t)) return NO_DATA;
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  const a = VIRIDIS[i].match(/\w\w/g).map((h) => parseInt(h, 16));
  const b = VIRIDIS[i + 1].match(/\w\w/g).map((h) => parseInt(h, 16));
  return `rgb(${a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",")})`;
}

async function boundaryFor(level) {
  state.boundaryCache = state.boundaryCache || {};
  if (!state.boundaryCache[level]) {
    state.boundaryCache[level] = await api(`/dashboard/boundaries/${encodeURIComponent(level)}`);
  }
  return state.boundaryCache[level];
}

function parentOf(level) {
  const i = state.levels.indexOf(level);
  return i >= 0 && i < state.levels.length - 1 ? state.levels[i + 1] : null;
}

async function drawMap(current) {
  const level = $("map-level").value;
  const measure = $("map-measure").value;
  const measureName = $("map-measure").selectedOptions[0].textContent.split(" (")[0];
  const geographic = Object.prototype.hasOwnProperty.call(state.boundaries || {}, level);
  const parent = geographic ? null : parentOf(level);
  const by = parent ? [parent, level] : [level];
  const response = await api(modelPath("estimates"), { params: { level: by.join(","),
    prob: prob(), page_size: 5000, version: state.version } });
  const geo = geographic ? await boundaryFor(level) : null;
  if (!current()) return;
  showDisclosure(response);
  const rows = response.rows.map((r) => {
    const values = Object.values(r.group);
    return { code: values[values.length - 1], parent: parent ? values[0] : null, row: r };
  });
  const values = rows.map((r) => r.row[measure].mean).filter((v) => v !== null);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const scale = (v) => (v === null || v === undefined ? null : hi > lo ? (v - lo) / (hi - lo) : 0.5);
  const kind = measure === "diagnosis_rate" ? "rate" : "count";
  const label = (name, r) => `${name}: ${measureName} ${summaryText(r[measure], r, kind)}`;
  const svg = geographic
    ? geoMap(geo, level, rows, scale, measure, label)
    : tileMap(level, parent, rows, scale, measure, label);
  $("map").replaceChildren(svg);
  $("map-kind").textContent = geographic
    ? `${levelLabel(level)} boundaries; hover over or tab to an area for its interval.`
    : `No boundaries are configured for ${levelLabel(level)}: each tile is one area, `
      + (parent ? `in ${levelLabel(parent)} order, ` : "") + "hover over or tab to a tile for its interval.";
  drawLegend(lo, hi, kind);
  sourceLine("map-source", response);
}

function attachTip(node, text) {
  const show = () => { $("map-tip").textContent = text; };
  node.addEventListener("mouseenter", show);
  node.addEventListener("focus", show);
}

function shape(tag, attrs, text, r, measure, scale) {
  const fill = colour(scale(r ? r[measure].mean : null));
  const node = el(`svg:${tag}`, { ...attrs, class: "area", fill, tabindex: 0, role: "img",
    "aria-label": text }, el("svg:title", { text }));
  attachTip(node, text);
  return node;
}

function geoMap(geo, level, rows, scale, measure, label) {
  const byCode = new Map(rows.map((r) => [r.code, r.row]));
  const [x0, y0, x1, y1] = geo.bbox;
  const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
  const width = 640;
  const s = width / ((x1 - x0) * k || 1);
  const height = Math.max(200, Math.round((y1 - y0) * s));
  const px = (p) => `${((p[0] - x0) * k * s).toFixed(1)},${((y1 - p[1]) * s).toFixed(1)}`;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, width, height,
    role: "group", "aria-label": `Map of ${levelLabel(level)} areas` });
  const seen = new Set();
  for (const f of geo.features) {
    const r = byCode.get(f.code);
    if (r) seen.add(f.code);
    const d = f.polygons.map((poly) => poly.map((ring) => `M${ring.map(px).join("L")}Z`)
      .join("")).join("");
    const name = f.name === f.code ? f.code : `${f.name} (${f.code})`;
    const text = r ? label(name, r) : `${name}: no estimate in this model`;
    svg.append(shape("path", { d, "fill-rule": "evenodd", "data-code": f.code }, text, r,
      measure, scale));
  }
  const missing = rows.filter((r) => !seen.has(r.code)).map((r) => r.code);
  $("map-notes").textContent = missing.length
    ? `${missing.length} area(s) have no boundary and are not drawn: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", ..." : ""}.`
    : "";
  return svg;
}

function tileMap(level, parent, rows, scale, measure, label) {
  const sorted = [...rows].sort((a, b) => (a.parent || "").localeCompare(b.parent || "",
    undefined, { numeric: true }) || a.code.localeCompare(b.code, undefined, { numeric: true }));
  const n = sorted.length;
  const cols = Math.max(1, Math.ceil(Math.sqrt(n * 1.6)));
  const size = Math.max(14, Math.min(48, Math.floor(640 / cols)));
  const width = cols * size;
  const height = Math.ceil(n / cols) * size;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": `Tiles of ${levelLabel(level)} areas` });
  sorted.forEach((r, i) => {
    const name = parent ? `${r.code} (${levelLabel(parent)} ${r.parent})` : r.code;
    svg.append(shape("rect", { x: (i % cols) * size, y: Math.floor(i / cols) * size,
      width: size - 1, height: size - 1, "data-code": r.code }, label(name, r.row), r.row,
    measure, scale));
  });
  $("map-notes").textContent = "";
  return svg;
}

function drawLegend(lo, hi, kind) {
  const fmt = kind === "rate" ? pct : num;
  const stops = VIRIDIS.map((c, i) => el("svg:stop", { offset: `${(100 * i) / (VIRIDIS.length - 1)}%`,
    "stop-color": c }));
  const bar = el("svg:svg", { width: 220, height: 16, role: "img",
    "aria-label": `colour scale from ${fmt(lo)} (dark purple) to ${fmt(hi)} (yellow)` },
  el("svg:defs", {}, el("svg:linearGradient", { id: "legend-grad" }, stops)),
  el("svg:rect", { width: 220, height: 16, fill: "url(#legend-grad)" }));
  const noData = state.disclosure && state.disclosure.applied
    ? `${suppressedText()} or no estimate` : "no estimate";
  $("map-legend").replaceChildren(el("span", { text: fmt(Number.isFinite(lo) ? lo : null) }), bar,
    el("span", { text: fmt(Number.isFinite(hi) ? hi : null) }),
    el("span", {}, el("span", { class: "swatch", style: `background:${NO_DATA}` }), noData));
}

// -- table --------------------------------------------------------------------------------

const TABLE_MEASURES = [
  ["population", "Population", null],
  ["expected", "Expected cases", "count"],
  ["recorded", "Recorded", "count"],
  ["undiagnosed", "Undiagnosed", "count"],
  ["diagnosis_rate", "Diagnosis rate", "rate"],
  ["yield_per_contact", "Yield per contact", "rate"],
];

function tableWhere() {
  const parts = [];
  for (const select of document.querySelectorAll("#table-attrs select")) {
    if (select.value) {
      parts.push(`${select.dataset.attr} == '${select.value.replace(/'/g, "\\'")}'`);
    }
  }
  const text = $("table-where").value.trim();
  if (text) parts.push(parts.length ? `(${text})` : text);
  return parts.join(" and ");
}

function tableParams() {
  const levels = [$("table-level").value, $("table-level2").value]
    .filter((v, i, a) => v && a.indexOf(v) === i);
  return { level: levels.join(","), where: tableWhere(), prob: prob(), sort: state.table.sort,
    version: state.version };
}

async function loadTable(current) {
  setStatus("table-status", "Loading…");
  const pageSize = 100;
  const response = await api(modelPath("estimates"), { params: { ...tableParams(),
    page: state.table.page, page_size: pageSize } });
  if (!current()) return;
  showDisclosure(response);
  const groups = response.rows.length ? Object.keys(response.rows[0].group) : response.by;
  state.table.groups = groups;
  state.table.pages = Math.max(1, Math.ceil(response.total_rows / pageSize));
  const head = el("tr", {}, ...groups.map((g) => sortHeader(g, groupLabel(g), true)),
    ...TABLE_MEASURES.map(([m, name]) => sortHeader(m === "population" ? m : `${m}_mean`, name)));
  $("estimates").tHead.replaceChildren(head);
  const body = response.rows.map((r) => el("tr", {},
    ...groups.map((g) => el("td", { class: "label", text: r.group[g] })),
    ...TABLE_MEASURES.map(([m, , kind]) => el("td", { "data-measure": m },
      kind ? summaryCell(r[m], r, kind) : num(r[m])))));
  $("estimates").tBodies[0].replaceChildren(...body);
  $("table-caption").textContent = `Estimates by ${groups.map(groupLabel).join(" and ") || "total"}`
    + `${response.where ? ` where ${response.where}` : ""}, with ${probLabel()} intervals`;
  $("table-page").textContent = `Page ${state.table.page} of ${state.table.pages}`;
  $("table-prev").disabled = state.table.page <= 1;
  $("table-next").disabled = state.table.page >= state.table.pages;
  setStatus("table-status", `${response.total_rows} row(s).`);
  sourceLine("table-source", response);
}

function sortHeader(column, name, isGroup = false) {
  const current = state.table.sort || "";
  const active = current.replace(/^-/, "") === column;
  const descending = current.startsWith("-");
  const th = el("th", { scope: "col", class: isGroup ? "label" : undefined,
    "aria-sort": active ? (descending ? "descending" : "ascending") : "none" });
  th.append(el("button", { type: "button", "data-sort": column,
    "aria-label": `${name}: sort ${active && !descending ? "descending" : "ascending"}`,
    onclick: () => {
      state.table.sort = active && !descending ? `-${column}` : column;
      state.table.page = 1;
      state.dirty.add("table");
      refresh();
    } }, name, active ? (descending ? " ▼" : " ▲") : ""));
  return th;
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function downloadCsv() {
  setStatus("table-status", "Preparing CSV…");
  try {
    const response = await api(modelPath("estimates"), { params: { ...tableParams(),
      format: "csv" }, raw: true });
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = disposition.match(/filename="([^"]+)"/);
    saveBlob(await response.blob(), match ? match[1] : `${state.model}-estimates.csv`);
    setStatus("table-status", "CSV downloaded (all rows of this query).");
  } catch (err) {
    setStatus("table-status", `CSV failed: ${err.message}`, true);
  }
}

// -- axes for the charts -------------------------------------------------------------------

function ticks(lo, hi, count = 5) {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

function frame(width, height, margin, xDomain, yDomain, xFmt, yFmt, xTitle, yTitle) {
  const [x0, x1] = xDomain;
  const [y0, y1] = yDomain;
  const X = (v) => margin.left + ((v - x0) / (x1 - x0 || 1)) * (width - margin.left - margin.right);
  const Y = (v) => height - margin.bottom - ((v - y0) / (y1 - y0 || 1)) * (height - margin.top - margin.bottom);
  const g = el("svg:g", { "aria-hidden": "true" });
  for (const t of ticks(x0, x1)) {
    g.append(el("svg:line", { class: "grid", x1: X(t), x2: X(t), y1: margin.top, y2: height - margin.bottom }),
      el("svg:text", { x: X(t), y: height - margin.bottom + 16, "text-anchor": "middle", text: xFmt(t) }));
  }
  for (const t of ticks(y0, y1)) {
    g.append(el("svg:line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: Y(t), y2: Y(t) }),
      el("svg:text", { x: margin.left - 6, y: Y(t) + 4, "text-anchor": "end", text: yFmt(t) }));
  }
  g.append(el("svg:line", { class: "axis", x1: margin.left, x2: width - margin.right,
    y1: height - margin.bottom, y2: height - margin.bottom }),
  el("svg:line", { class: "axis", x1: margin.left, x2: margin.left, y1: margin.top,
    y2: height - margin.bottom }),
  el("svg:text", { x: (width + margin.left - margin.right) / 2, y: height - 6, "text-anchor": "middle", text: xTitle }),
  el("svg:text", { x: 14, y: (height - margin.bottom + margin.top) / 2, "text-anchor": "middle",
    transform: `rotate(-90 14 ${(height - margin.bottom + margin.top) / 2})`, text: yTitle }));
  return { X, Y, g };
}

// -- funnel -------------------------------------------------------------------------------

async function drawFunnel(current) {
  const level = $("funnel-level").value;
  const [response, total] = await Promise.all([
    api(modelPath("estimates"), { params: { level, prob: prob(), page_size: 5000, version: state.version } }),
    api(modelPath("estimates"), { params: { prob: prob(), version: state.version } }),
  ]);
  if (!current()) return;
  showDisclosure(response);
  const overall = total.rows[0].diagnosis_rate.mean;
  const points = response.rows.map((r) => ({ name: Object.values(r.group).join(" / "),
    e: r.expected.mean, p: r.diagnosis_rate.mean, r }))
    .filter((d) => d.e !== null && d.p !== null && d.e > 0);
  const hidden = response.rows.length - points.length;
  const width = 720;
  const height = 420;
  const margin = { top: 14, right: 20, bottom: 44, left: 64 };
  const eMax = Math.max(...points.map((d) => d.e), 1) * 1.05;
  const eMin = Math.max(Math.min(...points.map((d) => d.e)) * 0.9, 0.5);
  const limit = (e, z) => z * Math.sqrt((overall * (1 - overall)) / Math.max(e, 1e-9));
  const edge = Math.max(eMin, Math.min(...points.map((d) => d.e), eMax) * 0.85);
  const lows = points.map((d) => d.p).concat([overall - limit(edge, FUNNEL_Z["99.8%"])]);
  const highs = points.map((d) => d.p).concat([overall + limit(edge, FUNNEL_Z["99.8%"])]);
  const y0 = Math.max(0, Math.min(...lows) - 0.02);
  const y1 = Math.min(1, Math.max(...highs) + 0.02);
  const eLow = Math.min(...points.map((d) => d.e), eMax);
  const xStart = Math.max(0, eLow - 0.15 * (eMax - eLow));
  const { X, Y, g } = frame(width, height, margin, [xStart, eMax], [y0, y1], num,
    (v) => `${Math.round(100 * v)}%`, "expected cases (posterior mean)", "diagnosis rate");
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": `Funnel plot of diagnosis rate against expected cases, ${points.length} areas` });
  const clipId = "funnel-clip";
  svg.append(g, el("svg:defs", {}, el("svg:clipPath", { id: clipId }, el("svg:rect", {
    x: margin.left, y: margin.top, width: width - margin.left - margin.right,
    height: height - margin.top - margin.bottom }))));
  const curves = el("svg:g", { "clip-path": `url(#${clipId})`, "aria-hidden": "true" });
  const eFrom = Math.max(eMin, xStart);
  const xs = Array.from({ length: 120 }, (_, i) => eFrom + ((eMax - eFrom) * i) / 119);
  for (const [name, z] of Object.entries(FUNNEL_Z)) {
    const cls = name === "95%" ? "limit95" : "limit998";
    for (const sign of [-1, 1]) {
      const d = xs.map((e, i) => `${i ? "L" : "M"}${X(e).toFixed(1)},${Y(Math.min(1, Math.max(0,
        overall + sign * limit(e, z)))).toFixed(1)}`).join("");
      curves.append(el("svg:path", { class: cls, d }));
    }
  }
  curves.append(el("svg:line", { class: "overall", x1: X(xStart), x2: X(eMax), y1: Y(overall), y2: Y(overall) }));
  svg.append(curves);
  const outside = [];
  for (const d of points) {
    const z = (d.p - overall) / Math.sqrt((overall * (1 - overall)) / d.e);
    const out = Math.abs(z) > FUNNEL_Z["99.8%"] ? "99.8%" : Math.abs(z) > FUNNEL_Z["95%"] ? "95%" : "";
    if (out === "99.8%") outside.push(d.name);
    const text = `${d.name}: diagnosis rate ${summaryText(d.r.diagnosis_rate, d.r, "rate")}; `
      + `expected cases ${num(d.e)}${out ? `; outside the ${out} limits` : ""}`;
    svg.append(el("svg:circle", { class: `point${out ? " outside" : ""}`, cx: X(d.e), cy: Y(d.p),
      r: out ? 5 : 4, tabindex: 0, role: "img", "aria-label": text }, el("svg:title", { text })));
  }
  $("funnel").replaceChildren(svg);
  $("funnel-notes").textContent = `Overall diagnosis rate ${pct(overall)} (dashed: 95% limits, `
    + `dotted: 99.8%). ${outside.length} area(s) outside the 99.8% limits${outside.length
      ? `: ${outside.slice(0, 12).join(", ")}${outside.length > 12 ? ", ..." : ""}` : ""}.`
    + (hidden ? ` ${hidden} area(s) not shown: their expected cases are withheld (${suppressedText()}).` : "");
  sourceLine("funnel-source", response);
}

// -- equity -------------------------------------------------------------------------------

async function drawEquity(current) {
  const by = $("equity-by").value;
  if (!by) {
    $("equity-index").textContent = "This version has no attributes to compare.";
    return;
  }
  const response = await api(modelPath("equity"), { params: { by,
    reference: $("equity-ref").value, prob: prob(), version: state.version } });
  if (!current()) return;
  showDisclosure(response);
  const rows = response.rows;
  const width = 720;
  const rowH = 30;
  const margin = { top: 10, right: 24, bottom: 44, left: 150 };
  const height = margin.top + margin.bottom + rowH * rows.length;
  const vals = rows.flatMap((r) => [r.ratio.lower, r.ratio.upper, r.ratio.mean]).filter((v) => v !== null);
  const lo = Math.min(1, ...vals) * 0.97;
  const hi = Math.max(1, ...vals) * 1.03;
  const yIndex = (i) => margin.top + rowH * (i + 0.5);
  const { X, g } = frame(width, height, margin, [lo, hi], [0, 1], (v) => v.toFixed(2), () => "",
    `ratio of diagnosis rates to ${response.reference} (${probLabel()} intervals)`, "");
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": `Diagnosis rate ratios by ${levelLabel(by)} against ${response.reference}` }, g);
  svg.append(el("svg:line", { class: "overall", x1: X(1), x2: X(1), y1: margin.top,
    y2: height - margin.bottom, "aria-hidden": "true" }));
  rows.forEach((r, i) => {
    const name = Object.values(r.group)[0];
    const y = yIndex(i);
    const text = r.reference ? `${name}: reference group (diagnosis rate ${pct(r.diagnosis_rate.mean)})`
      : `${name}: ratio ${dec(r.ratio.mean)} (${probLabel()} interval ${dec(r.ratio.lower)} to ${dec(r.ratio.upper)})`;
    svg.append(el("svg:text", { x: margin.left - 8, y: y + 4, "text-anchor": "end", text: name,
      "aria-hidden": "true" }));
    if (r.ratio.lower !== null && r.ratio.upper !== null) {
      svg.append(el("svg:line", { class: "ci", x1: X(r.ratio.lower), x2: X(r.ratio.upper), y1: y, y2: y,
        "aria-hidden": "true" }));
    }
    if (r.ratio.mean !== null) {
      svg.append(el("svg:circle", { class: `est${r.reference ? " ref" : ""}`, cx: X(r.ratio.mean), cy: y,
        r: 5, tabindex: 0, role: "img", "aria-label": text }, el("svg:title", { text })));
    }
  });
  $("equity").replaceChildren(svg);
  const head = el("tr", {}, ...[levelLabel(by), "Population", "Expected cases", "Undiagnosed",
    "Diagnosis rate", "Ratio", "P(ratio < 1)"].map((h) => el("th", { scope: "col", text: h })));
  $("equity-table").tHead.replaceChildren(head);
  $("equity-table").tBodies[0].replaceChildren(...rows.map((r) => el("tr", {},
    el("td", { class: "label", text: `${Object.values(r.group)[0]}${r.reference ? " (reference)" : ""}` }),
    el("td", { text: num(r.population) }),
    el("td", {}, summaryCell(r.expected, r, "count")),
    el("td", {}, summaryCell(r.undiagnosed, r, "count")),
    el("td", {}, summaryCell(r.diagnosis_rate, r, "rate")),
    el("td", {}, r.reference ? "1 (reference)" : summaryCell(r.ratio, r, "ratio")),
    el("td", { text: r.reference ? "" : dec(r.p_ratio_below_1) }))));
  const index = response.inequality;
  $("equity-index").textContent = index ? index.rows.map((m) => `${m.measure.toUpperCase()} `
    + `${dec(m.mean, 3)} (${probLabel()} interval ${dec(m.lower, 3)} to ${dec(m.upper, 3)})`).join("; ")
    + ` along ${index.order.join(" < ")}: the slope (SII) and relative (RII) index of inequality `
    + "of diagnosis rates across the ordered groups." : "";
  sourceLine("equity-source", response);
}

// -- outreach planner ---------------------------------------------------------------------------

async function makePlan(event) {
  event.preventDefault();
  setStatus("plan-status", "Planning…");
  const level = $("plan-level").value;
  const body = {
    capacity: Number($("plan-capacity").value), capacity_unit: $("plan-capacity-unit").value,
    unit: $("plan-unit").value, level: level === state.levels[0] ? null : level,
    sensitivity: Number($("plan-sensitivity").value), prob: prob(), version: state.version,
    limit: 500,
  };
  if ($("plan-equity").value) body.equity = $("plan-equity").value;
  const current = claim("plan");
  try {
    const plan = await api(modelPath("targets"), { method: "POST", body });
    if (!current()) return;
    state.plan = plan;
    showDisclosure(plan);
    renderPlan(plan);
    setStatus("plan-status", `Plan of ${plan.total.units} unit(s).`);
  } catch (err) {
    if (current()) setStatus("plan-status", `No plan: ${err.message}`, true);
  }
}

function renderPlan(plan) {
  const groups = plan.units.length ? Object.keys(plan.units[0].group) : [];
  $("plan-summary").textContent = `${plan.total.units} unit(s), ${num(plan.total.contacts)} `
    + `people to contact; undiagnosed people found: ${summaryText(plan.total.found, {
      suppressed: plan.total.found.mean === null }, "count")}.`;
  const head = el("tr", {}, el("th", { scope: "col", text: "Rank" }),
    ...groups.map((g) => el("th", { scope: "col", class: "label", text: groupLabel(g) })),
    ...["Population", "Contacts", "Found", "Yield per contact", "P(in the best set)"]
      .map((h) => el("th", { scope: "col", text: h })));
  $("plan-table").tHead.replaceChildren(head);
  $("plan-table").tBodies[0].replaceChildren(...plan.units.map((u) => el("tr", {},
    el("td", { text: u.rank }),
    ...groups.map((g) => el("td", { class: "label", text: u.group[g] })),
    el("td", { text: num(u.population) }),
    el("td", {}, u.contacts === null && u.suppressed ? el("span", { class: "suppressed", text: suppressedText() }) : num(u.contacts)),
    el("td", {}, summaryCell(u.found, u, "count")),
    el("td", {}, summaryCell(u.yield, u, "rate")),
    el("td", { text: dec(u.p_optimal) }))));
  $("plan-csv").disabled = !plan.units.length;
  sourceLine("plan-source", plan);
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function planCsv() {
  const plan = state.plan;
  if (!plan) return;
  const groups = plan.units.length ? Object.keys(plan.units[0].group) : [];
  const stats = ["mean", "sd", "lower", "upper"];
  const header = ["rank", ...groups, "population", "unregistered", "contacts",
    ...stats.map((s) => `found_${s}`), ...stats.map((s) => `yield_${s}`), "p_optimal",
    "suppressed", "rounded", "rate_flagged"];
  const lines = [header.join(",")];
  for (const u of plan.units) {
    lines.push([u.rank, ...groups.map((g) => u.group[g]), u.population, u.unregistered,
      u.contacts, ...stats.map((s) => u.found[s]), ...stats.map((s) => u.yield[s]),
      u.p_optimal, u.suppressed, u.rounded, u.rate_flagged].map(csvCell).join(","));
  }
  saveBlob(new Blob([`${lines.join("\n")}\n`], { type: "text/csv" }),
    `${plan.model}-${plan.version}-plan.csv`);
}

// -- wiring -------------------------------------------------------------------------------

async function boot() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("api-key").value.trim());
  });
  $("logout").addEventListener("click", () => signOut("Signed out."));
  for (const t of TABS) {
    $(`tab-${t}`).addEventListener("click", () => selectTab(t));
    $(`tab-${t}`).addEventListener("keydown", tabKeys);
  }
  const guard = (fn) => () => fn().catch((err) => setStatus("table-status", err.message, true));
  $("model").addEventListener("change", guard(loadVersions));
  $("version").addEventListener("change", guard(loadVersion));
  $("prob").addEventListener("change", () => { showProvenance(); markAllDirty(); });
  $("map-level").addEventListener("change", () => { state.mapChosen = true; state.dirty.add("map"); refresh(); });
  $("map-measure").addEventListener("change", () => { state.dirty.add("map"); refresh(); });
  $("table-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.table.page = 1;
    state.dirty.add("table");
    refresh();
  });
  for (const id of ["table-level", "table-level2"]) {
    $(id).addEventListener("change", () => { state.table.page = 1; state.dirty.add("table"); refresh(); });
  }
  $("table-attrs").addEventListener("change", () => { state.table.page = 1; state.dirty.add("table"); refresh(); });
  $("table-csv").addEventListener("click", downloadCsv);
  $("table-prev").addEventListener("click", () => { state.table.page -= 1; state.dirty.add("table"); refresh(); });
  $("table-next").addEventListener("click", () => { state.table.page += 1; state.dirty.add("table"); refresh(); });
  $("funnel-level").addEventListener("change", () => { state.dirty.add("funnel"); refresh(); });
  $("equity-by").addEventListener("change", () => { fillReference(); state.dirty.add("equity"); refresh(); });
  $("equity-ref").addEventListener("change", () => { state.dirty.add("equity"); refresh(); });
  $("plan-form").addEventListener("submit", makePlan);
  $("plan-csv").addEventListener("click", planCsv);
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) await signIn(saved);
}

document.addEventListener("DOMContentLoaded", () => { boot(); });

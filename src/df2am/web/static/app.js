// df2am serve: plain JavaScript, no build step, no library.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const fmt = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

let info = {};
const search = { file: null, offset: 0, total: 0 };
const runq = { offset: 0, limit: 20, total: 0 };

function status(msg, isError = false) {
  const s = $("status");
  s.textContent = msg;
  s.className = isError ? "error" : "";
}

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail ? JSON.stringify(body.detail) : r.statusText);
  return body;
}

function show(view) {
  for (const v of ["search", "run"]) {
    $("view-" + v).hidden = v !== view;
    $("tab-" + v).classList.toggle("active", v === view);
  }
  if (location.hash.slice(1) !== view) location.hash = view;
  if (view === "run" && !$("metrics").dataset.loaded) loadRun();
}

// ------------------------------------------------------------------ search

async function runSearch() {
  if (!search.file) { status("choose a query image first", true); return; }
  const limit = Number($("limit").value) || 20;
  const fd = new FormData();
  fd.append("file", search.file);
  fd.append("modality", $("modality").value);
  fd.append("offset", String(search.offset));
  fd.append("limit", String(limit));
  status("searching…");
  $("results").dataset.state = "loading";
  try {
    const res = await getJSON("/api/search", { method: "POST", body: fd });
    search.total = res.total;
    renderResults(res, limit);
    const notes = [...(res.warnings || []), ...(res.note ? [res.note] : [])];
    status(notes.length ? notes.join("; ") : `${res.total} gallery images`, notes.length > 0);
  } catch (e) {
    $("results").replaceChildren(el("p", { class: "error", text: e.message }));
    $("results").dataset.state = "error";
    status(e.message, true);
  }
}

// A caption a person reads: rank and distance, then identity and camera when the path holds
// them; the full path is the tooltip (title), never wrapped text under a 90-pixel image.
function caption(m) {
  const who = [m.identity === null || m.identity === undefined ? null : `id ${m.identity}`,
    m.camera ? (/^\d+$/.test(m.camera) ? `cam ${m.camera}` : m.camera) : null]
    .filter((x) => x).join(" · ");
  return el("figcaption", {},
    el("span", { class: "line rank", text: `#${m.rank} · ${fmt(Math.max(0, m.distance), 3)}` }),
    el("span", { class: "line who", text: who || "–" }));
}

function renderResults(res, limit) {
  const grid = $("results");
  grid.replaceChildren(...res.results.map((m) => el("figure",
    { class: "result", title: m.path, "data-path": m.path, "data-rank": m.rank,
      "data-distance": m.distance, "data-identity": m.identity ?? "", "data-camera": m.camera ?? "" },
    el("img", { src: m.url, alt: m.path, loading: "lazy" }),
    caption(m))));
  grid.dataset.state = "done";
  const v = $("verdict");
  if (res.in_gallery === null || res.in_gallery === undefined) {
    v.textContent = ""; v.className = "";
  } else {
    v.textContent = res.in_gallery
      ? `in gallery (best ${fmt(res.best_distance, 4)} ≤ ${res.threshold})`
      : `not in gallery (best ${fmt(res.best_distance, 4)} > ${res.threshold})`;
    v.className = res.in_gallery ? "in" : "out";
  }
  const page = Math.floor(res.offset / limit) + 1;
  $("page-info").textContent = `page ${page} of ${Math.max(1, Math.ceil(res.total / limit))}`;
  $("prev").disabled = res.offset <= 0;
  $("next").disabled = res.offset + limit >= res.total;
}

function setFile(f) {
  search.file = f;
  search.offset = 0;
  runSearch();
}

function initSearch() {
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) setFile(e.target.files[0]); });
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search.offset = 0; runSearch(); });
  $("modality").addEventListener("change", () => { if (search.file) { search.offset = 0; runSearch(); } });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) setFile(e.dataTransfer.files[0]);
  });
  $("prev").addEventListener("click", () => {
    search.offset = Math.max(0, search.offset - (Number($("limit").value) || 20)); runSearch();
  });
  $("next").addEventListener("click", () => {
    search.offset += Number($("limit").value) || 20; runSearch();
  });
}

// ------------------------------------------------------------------ run

function drawCMC(cmc) {
  const svg = $("cmc");
  const NS = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  };
  svg.replaceChildren();
  const mean = (cmc && cmc.mean) || [];
  if (!mean.length) return;
  const W = 420, H = 260, L = 40, R = 10, T = 10, B = 30;
  const x = (i) => L + (mean.length === 1 ? 0 : (i / (mean.length - 1)) * (W - L - R));
  const y = (v) => T + (1 - v / 100) * (H - T - B);
  svg.append(mk("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#999" }));
  for (const v of [0, 25, 50, 75, 100]) {
    svg.append(mk("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eee" }));
    const t = mk("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10 });
    t.textContent = v; svg.append(t);
  }
  const pts = mean.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  svg.append(mk("polyline", { points: pts, fill: "none", stroke: "#1565c0", "stroke-width": 2, id: "cmc-line" }));
  const lab = mk("text", { x: (W + L) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11 });
  lab.textContent = `rank (1–${mean.length}) · CMC %`;
  svg.append(lab);
}

async function loadRun() {
  try {
    const r = await getJSON("/api/run");
    const t = $("metrics");
    t.replaceChildren(el("tr", {}, el("th", { text: "metric" }), el("th", { text: "mean %" }),
      el("th", { text: "std" })),
      ...r.metrics.map((m) => el("tr", { "data-key": m.key }, el("td", { text: m.key }),
        el("td", { text: fmt(m.mean) }), el("td", { text: fmt(m.std) }))));
    t.dataset.loaded = "1";
    drawCMC(r.cmc);
    const p = r.protocol || {};
    $("protocol").textContent = `${p.dataset} mode=${p.mode} trials=${(p.trials || []).length}` +
      ` feature=${p.feature} flip=${p.flip}` + (r.ranked ? ` · rankings of trial ${r.trial}` : "");
    if (r.ranked) loadQueries(); else $("queries").textContent = "no per-query rankings (no checkpoint)";
  } catch (e) { status(e.message, true); }
}

async function loadQueries() {
  const params = new URLSearchParams({ offset: runq.offset, limit: runq.limit });
  if ($("failed").checked) params.set("failed", "1");
  if ($("cam").value) params.set("cam", $("cam").value);
  try {
    const r = await getJSON("/api/run/queries?" + params);
    runq.total = r.total;
    const camSel = $("cam");
    if (camSel.options.length === 1) {
      for (const c of r.cams) camSel.append(el("option", { value: c, text: `cam ${c}` }));
    }
    $("queries").replaceChildren(...r.queries.map((q) => el("div",
      { class: "query-row", "data-path": q.path, "data-correct": q.correct ? "1" : "0",
        "data-valid": q.valid ? "1" : "0" },
      el("span", { class: "mark " + (q.correct ? "ok" : "bad"), text: q.correct ? "✓" : "✗" }),
      el("div", { class: "thumb q" }, el("img", { src: q.url, alt: q.path }),
        el("div", { text: `id ${q.pid} cam ${q.cam}` })),
      ...q.ranked.map((g, i) => el("div",
        { class: "thumb " + (g.correct ? "ok" : "bad"), title: g.path, "data-path": g.path, "data-rank": i + 1 },
        el("img", { src: g.url, alt: g.path, loading: "lazy" }),
        el("div", { text: `${i + 1}: id ${g.pid} ${fmt(g.distance, 3)}` }))))));
    $("queries").dataset.state = "done";
    $("qpage-info").textContent = `${r.total ? runq.offset + 1 : 0}–${Math.min(runq.offset + runq.limit, r.total)} of ${r.total}`;
  } catch (e) { status(e.message, true); }
}

function initRun() {
  $("failed").addEventListener("change", () => { runq.offset = 0; loadQueries(); });
  $("cam").addEventListener("change", () => { runq.offset = 0; loadQueries(); });
  $("qprev").addEventListener("click", () => { runq.offset = Math.max(0, runq.offset - runq.limit); loadQueries(); });
  $("qnext").addEventListener("click", () => {
    if (runq.offset + runq.limit < runq.total) { runq.offset += runq.limit; loadQueries(); }
  });
}

async function main() {
  initSearch();
  initRun();
  for (const v of ["search", "run"]) $("tab-" + v).addEventListener("click", () => show(v));
  try { info = await getJSON("/api/info"); } catch (e) { status(e.message, true); return; }
  $("tab-search").disabled = !info.search;
  $("tab-run").disabled = !info.run;
  if (info.gallery_modality === "ir") $("modality").value = "rgb";
  const want = location.hash.slice(1);
  show(want === "run" && info.run ? "run" : (info.search ? "search" : "run"));
  window.addEventListener("hashchange", () => {
    const v = location.hash.slice(1);
    if ((v === "run" && info.run) || (v === "search" && info.search)) show(v);
  });
  document.body.dataset.ready = "1";
}

main();

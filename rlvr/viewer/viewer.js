// The rollout inspector. Plain JS over the JSON in #rlvr-data (see rlvr/viewer/__init__.py); the
// state lives in the URL fragment so a view can be linked and loaded filtered.
"use strict";
const DATA = JSON.parse(document.getElementById("rlvr-data").textContent);
const RUNS = DATA.runs;
const COLORS = ["#0071e3", "#d70015", "#1a7f37", "#8e44ad"];
const DEFAULT_METRICS = ["reward/mean", "eval/em", "train/loss", "train/logprob_gap",
  "train/advantage", "rollout/response_len", "env/searches", "reward/accuracy"];
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// -- state in the fragment ----------------------------------------------------------------------
function readState() {
  const p = new URLSearchParams(location.hash.slice(1));
  const s = Object.fromEntries(p.entries());
  s.metrics = s.metrics ? s.metrics.split(",") : null;
  return s;
}
let S = readState();
function writeState() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(S)) {
    if (v === null || v === undefined || v === "" || v === false) continue;
    p.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  history.replaceState(null, "", "#" + p.toString());
}

// -- curves ---------------------------------------------------------------------------------------
function metricKeys() {
  const keys = new Set();
  for (const r of RUNS) for (const row of r.metrics) for (const k in row) if (k !== "step") keys.add(k);
  return [...keys].sort();
}

function chart(key, w = 260, h = 120) {
  const pad = {l: 40, r: 6, t: 4, b: 18};
  const series = RUNS.map((r) => r.metrics.filter((row) => key in row).map((row) => [row.step, row[key]]));
  const pts = series.flat();
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e); return e;
  };
  if (pts.length) {
    let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const X = (x) => pad.l + (x - x0) / (x1 - x0) * (w - pad.l - pad.r);
    const Y = (y) => h - pad.b - (y - y0) / (y1 - y0) * (h - pad.t - pad.b);
    add("line", {x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, stroke: "#bbb"});
    add("line", {x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, stroke: "#bbb"});
    for (const [v, y] of [[y1, pad.t + 8], [y0, h - pad.b]])
      add("text", {x: pad.l - 3, y, "text-anchor": "end", "font-size": 10, fill: "#555"}, fmt(v));
    for (const [v, a] of [[x0, "start"], [x1, "end"]])
      add("text", {x: X(v), y: h - 4, "text-anchor": a, "font-size": 10, fill: "#555"}, String(v));
    series.forEach((ser, i) => {
      if (!ser.length) return;
      add("polyline", {points: ser.map(([x, y]) => `${X(x)},${Y(y)}`).join(" "), fill: "none",
        stroke: COLORS[i % COLORS.length], "stroke-width": 1.5, class: "series", "data-run": i});
      if (ser.length === 1) add("circle", {cx: X(ser[0][0]), cy: Y(ser[0][1]), r: 3, fill: COLORS[i % COLORS.length]});
    });
    const cur = Number(S.step);
    if (Number.isFinite(cur) && cur >= x0 && cur <= x1)
      add("line", {x1: X(cur), x2: X(cur), y1: pad.t, y2: h - pad.b, stroke: "#999", "stroke-dasharray": "3,3"});
  }
  const box = el("div", {class: "chart", "data-metric": key},
    el("button", {class: "rm", title: "remove", text: "×", onclick: () => {
      S.metrics = shownMetrics().filter((k) => k !== key); writeState(); renderCurves(); }}),
    el("div", {class: "name", text: key}));
  box.append(svg);
  return box;
}

function shownMetrics() {
  const keys = metricKeys();
  if (S.metrics) return S.metrics.filter((k) => keys.includes(k));
  return DEFAULT_METRICS.filter((k) => keys.includes(k)).slice(0, 6);
}

function renderCurves() {
  const box = $("curves");
  box.replaceChildren();
  const keys = metricKeys();
  if (!keys.length) {
    const sums = RUNS.filter((r) => Object.keys(r.summary || {}).length);
    $("curves-section").querySelector("h2").textContent = sums.length ? "Evaluation" : "Curves";
    for (const r of sums)
      box.append(el("div", {class: "chart"}, el("div", {class: "name", text: r.name}),
        el("div", {text: Object.entries(r.summary).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ")})));
    if (!sums.length) box.append(el("span", {class: "none", text: "no metrics.jsonl"}));
  }
  for (const k of shownMetrics()) box.append(chart(k));
  const add = $("metric-add");
  add.replaceChildren(el("option", {value: "", text: "…"}),
    ...keys.filter((k) => !shownMetrics().includes(k)).map((k) => el("option", {value: k, text: k})));
}

// -- steps, filters, groups -------------------------------------------------------------------------
function stepKeys(run) { return Object.keys(run.steps).sort((a, b) => (a === "eval") - (b === "eval") || a - b); }

function toolErrors(r) { return (r.tool_calls || []).filter((c) => !c.valid || c.error).length; }

function passes(r) {
  const num = (v) => (v === undefined || v === "" ? null : Number(v));
  const lo = num(S.rmin), hi = num(S.rmax);
  if (lo !== null && !(r.reward >= lo)) return false;
  if (hi !== null && !(r.reward <= hi)) return false;
  if (S.finish && r.finish_reason !== S.finish) return false;
  if (S.trunc === "yes" && !r.truncated) return false;
  if (S.trunc === "no" && r.truncated) return false;
  if (S.toolerr && !toolErrors(r)) return false;
  if (S.reason) {
    const text = [r.reason, r.error || "", ...Object.values(r.reasons || {})].join(" ").toLowerCase();
    if (!text.includes(S.reason.toLowerCase())) return false;
  }
  return true;
}

function primary() { return RUNS[Number(S.run) || 0] || RUNS[0]; }
// the chosen trajectory of the primary run (none when the filters leave nothing)
function selected() { return S.traj === "" || S.traj === undefined ? undefined : (primary().steps[S.step] || [])[Number(S.traj)]; }

function renderControls() {
  const run = primary();
  const steps = stepKeys(run);
  if (!steps.includes(S.step)) S.step = steps.length ? steps[steps.length - 1] : "";
  $("step").replaceChildren(...steps.map((k) => el("option", {value: k, text: k === "eval" ? "eval" : `step ${k}`})));
  $("step").value = S.step;
  const reasons = new Set();
  for (const r of RUNS) for (const recs of Object.values(r.steps)) for (const t of recs) reasons.add(t.finish_reason);
  $("f-finish").replaceChildren(el("option", {value: "", text: "any"}),
    ...[...reasons].sort().map((k) => el("option", {value: k, text: k})));
  $("f-finish").value = S.finish || "";
  $("f-rmin").value = S.rmin || ""; $("f-rmax").value = S.rmax || "";
  $("f-trunc").value = S.trunc || ""; $("f-toolerr").checked = !!S.toolerr;
  $("f-reason").value = S.reason || ""; $("color").value = S.color || "mask";
}

function renderGroups() {
  const recs = primary().steps[S.step] || [];
  const match = recs.map((r, i) => [r, i]).filter(([r]) => passes(r));
  $("match-count").textContent = `${match.length} of ${recs.length} trajectories match`;
  if (!match.some(([, i]) => String(i) === String(S.traj))) S.traj = match.length ? String(match[0][1]) : "";
  const groups = new Map();
  for (const [r, i] of match) {
    if (!groups.has(r.group_id)) groups.set(r.group_id, []);
    groups.get(r.group_id).push([r, i]);
  }
  const body = $("groups").querySelector("tbody");
  body.replaceChildren();
  for (const [gid, items] of groups) {
    const cells = items.map(([r, i]) => el("span", {
      class: "traj-cell" + (String(i) === S.traj ? " selected" : "") + (r.error || toolErrors(r) ? " err" : "")
        + (r.advantage > 0 ? " pos" : r.advantage < 0 ? " neg" : ""),
      "data-index": i, title: r.reason || "",
      text: `r ${fmt(r.reward)} · A ${r.advantage === null || r.advantage === undefined ? "–" : fmt(r.advantage)} · ${r.finish_reason}`,
      onclick: () => { S.traj = String(i); S.tok = ""; writeState(); renderGroups(); renderTrajectories(); }}));
    body.append(el("tr", {"data-group": gid}, el("td", {text: gid.slice(0, 8)}),
      el("td", {text: items[0][0].task_id}), el("td", {}, ...cells)));
  }
}

// -- one trajectory, token by token ---------------------------------------------------------------
function tokenInfo(r, i) {
  const lp = r.logprobs[i], tl = r.trainer_logprobs ? r.trainer_logprobs[i] : null;
  const adv = r.advantages ? r.advantages[i] : null;
  const kind = i < r.prompt_len ? "prompt" : r.loss_mask[i] ? "sampled" : "observation";
  const lines = [`#${i} id ${r.token_ids[i]} (${kind})`];
  if (r.loss_mask[i]) lines.push(`logprob ${fmt(lp)}`);
  if (tl !== null && r.loss_mask[i]) lines.push(`trainer ${fmt(tl)}  gap ${fmt(lp - tl)}`);
  if (adv !== null && (r.trained_mask ? r.trained_mask[i] : r.loss_mask[i])) lines.push(`advantage ${fmt(adv)}`);
  return lines.join("\n");
}

function shade(r, i, mode) {
  if (!r.loss_mask[i] || mode === "mask") return null;
  let v;
  if (mode === "logprob") v = Math.min(1, -r.logprobs[i] / 6);
  else if (mode === "gap") v = r.trainer_logprobs ? Math.min(1, Math.abs(r.logprobs[i] - r.trainer_logprobs[i]) * 20) : 0;
  else if (mode === "advantage") {
    const a = r.advantages ? r.advantages[i] : 0;
    return a >= 0 ? `rgba(26,127,55,${Math.min(1, a) * 0.6})` : `rgba(215,0,21,${Math.min(1, -a) * 0.6})`;
  }
  return `rgba(215,0,21,${(v * 0.7).toFixed(3)})`;
}

function renderTrajectory(pane, run, r, label) {
  pane.replaceChildren();
  pane.append(el("h3", {text: label}));
  if (!r) { pane.append(el("div", {class: "none", text: "no trajectory"})); return; }
  const parts = Object.entries(r.reward_parts || {}).map(([k, v]) => `${k} ${fmt(v)}` +
    (r.reasons && r.reasons[k] ? ` (${r.reasons[k]})` : ""));
  const calls = (r.tool_calls || []).map((c) => `${c.name}(${JSON.stringify(c.query).slice(0, 60)})` + (c.valid ? "" : ` ✗ ${c.error || ""}`));
  const meta = el("div", {class: "meta"},
    el("div", {text: `task ${r.task_id} · group ${String(r.group_id).slice(0, 8)} · ${r.dataset ? "dataset " + r.dataset + " · " : ""}` +
      `reward ${fmt(r.reward)} · advantage ${r.advantage === null || r.advantage === undefined ? "–" : fmt(r.advantage)} · ` +
      `finish ${r.finish_reason}${r.truncated ? " (truncated)" : ""} · ${r.turns.length} turns`}),
    el("div", {text: parts.length ? "parts: " + parts.join("; ") : (r.reason ? "reason: " + r.reason : "")}),
    calls.length ? el("div", {text: "tool calls: " + calls.join("; ")}) : "",
    r.error ? el("div", {text: "error: " + r.error}) : "",
    r.trainer_logprobs ? "" : el("div", {class: "none", text: "engine logprobs only (the trainer's are logged with rl.old_logprobs = recompute)"}));
  pane.append(meta);
  const box = el("div", {class: "tokens", "data-run": RUNS.indexOf(run), "data-task": r.task_id});
  const mode = S.color || "mask";
  const frag = document.createDocumentFragment();
  for (let i = 0; i < r.token_ids.length; i++) {
    const kind = i < r.prompt_len ? "prompt" : r.loss_mask[i] ? "sampled" : "obs";
    const trained = kind === "obs" && r.trained_mask && r.trained_mask[i];
    const span = el("span", {class: `tok ${kind}${trained ? " trained" : ""}`, "data-i": i,
      "data-id": r.token_ids[i], text: r.tokens[i]});
    const bg = shade(r, i, mode);
    if (bg) span.style.background = bg;
    frag.append(span);
  }
  box.append(frag);
  box.addEventListener("click", (e) => {  // a click pins the token (and puts it in the link)
    const t = e.target.closest(".tok"); if (!t || pane.id !== "traj-a") return;
    S.tok = S.tok === t.dataset.i ? "" : t.dataset.i; writeState(); renderTrajectories();
  });
  box.addEventListener("mouseover", (e) => {
    const t = e.target.closest(".tok"); if (!t) return;
    const tip = $("tip"); tip.textContent = tokenInfo(r, Number(t.dataset.i)); tip.hidden = false;
  });
  box.addEventListener("mousemove", (e) => { const tip = $("tip"); tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px"; });
  box.addEventListener("mouseleave", () => { pinTip(); });
  pane.append(box);
}

// the pinned token of the primary pane (``tok=`` in the fragment) keeps its details shown
function pinTip() {
  const tip = $("tip");
  const span = S.tok ? $("traj-a").querySelector(`.tok[data-i="${S.tok}"]`) : null;
  const r = selected();
  if (!span || !r) { tip.hidden = true; tip.textContent = ""; return; }
  span.classList.add("pinned");
  tip.textContent = tokenInfo(r, Number(S.tok));
  const box = span.getBoundingClientRect();
  tip.style.left = box.left + "px"; tip.style.top = box.bottom + 4 + "px"; tip.hidden = false;
}

// the other run's trajectory of the same prompt: same step first, then the nearest logged step
function counterpart(run, r) {
  const keys = stepKeys(run).sort((a, b) => Math.abs(a - S.step) - Math.abs(b - S.step));
  for (const k of keys) {
    const same = run.steps[k].filter((t) => t.task_id === r.task_id);
    if (same.length) return [k, same.find(passes) || same[0]];
  }
  return [null, null];
}

function renderTrajectories() {
  const run = primary();
  const r = selected();
  const where = S.step === "eval" ? "eval" : `step ${S.step}`;
  renderTrajectory($("traj-a"), run, r, `${run.name} · ${where}`);
  pinTip();
  const other = RUNS.find((x) => x !== run);
  if (!other || !r) { $("traj-b").replaceChildren(); return; }
  const [k, o] = counterpart(other, r);
  renderTrajectory($("traj-b"), other, o, `${other.name} · ${k === null ? "no trajectory of this prompt" : k === "eval" ? "eval" : "step " + k} · same prompt`);
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(Math.round(v * 1000) / 1000);
}

function renderAll() {
  renderControls(); renderCurves(); renderGroups(); renderTrajectories(); writeState();
}

// -- wiring -----------------------------------------------------------------------------------------
function bind(id, key, read) {
  const typed = $(id).type === "text" || $(id).type === "number";  // react per keystroke
  $(id).addEventListener(typed ? "input" : "change", () => {
    S[key] = read($(id)); writeState();
    if (key === "step") renderCurves();
    renderGroups(); renderTrajectories();
  });
}
document.getElementById("title").textContent = DATA.title;
$("runs-legend").replaceChildren(...RUNS.map((r, i) => el("span", {},
  el("span", {class: "swatch", style: `background:${COLORS[i % COLORS.length]}`}), r.name)));
bind("step", "step", (e) => e.value);
bind("f-rmin", "rmin", (e) => e.value);
bind("f-rmax", "rmax", (e) => e.value);
bind("f-finish", "finish", (e) => e.value);
bind("f-trunc", "trunc", (e) => e.value);
bind("f-toolerr", "toolerr", (e) => (e.checked ? "1" : ""));
bind("f-reason", "reason", (e) => e.value);
bind("color", "color", (e) => (e.value === "mask" ? "" : e.value));
$("metric-add").addEventListener("change", (e) => {
  if (!e.target.value) return;
  S.metrics = [...shownMetrics(), e.target.value]; writeState(); renderCurves();
});
window.addEventListener("hashchange", () => { S = readState(); renderAll(); });
renderAll();

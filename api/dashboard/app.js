// compressor dashboard: polls the same /v1 API as every other client. No build step, no CDN.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const view = () => $("#view");
const TERMINAL = ["succeeded", "failed", "cancelled"];
let timer = null;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function apiKey() { return localStorage.getItem("compressor-api-key") || ""; }
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }
function fmtSecs(s) { return s == null ? "–" : s < 90 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`; }
function fmtBytes(n) { return n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(1)} MB`; }
// the job's ETA: seconds left in its current stage (progress.eta_s), while it runs
function etaText(j) {
  if (TERMINAL.includes(j.status)) return "–";
  const p = j.progress || {};
  return p.eta_s != null ? `${fmtSecs(p.eta_s)} (${esc(p.stage || j.phase || "")})` : "–";
}
function detailText(d) {
  if (Array.isArray(d)) return d.map(e => `${(e.loc || []).join(".")}: ${e.msg}`).join("\n");
  return typeof d === "string" ? d : JSON.stringify(d);
}

async function api(path, opts = {}) {
  const headers = {"Authorization": `Bearer ${apiKey()}`, ...(opts.headers || {})};
  if (opts.body) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {...opts, headers});
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = detailText((await r.json()).detail); } catch (_) { /* not JSON */ }
    const err = new Error(`${r.status}: ${detail}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

function showError(e) {
  view().innerHTML = `<div class="card error" id="page-error">${esc(e.message)}</div>` +
    (e.status === 401 ? `<p>Paste an API key above (create one with <code>compressor keys create</code>).</p>` : "");
}

// ------------------------------------------------------------------ jobs list

async function jobsPage(params) {
  const status = params.get("status") || "";
  view().innerHTML = `
    <h2>Jobs</h2>
    <p><label for="status-filter" style="display:inline">Status</label>
      <select id="status-filter">${["", "queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
        .map(s => `<option ${s === status ? "selected" : ""} value="${s}">${s || "any"}</option>`).join("")}</select></p>
    <table id="jobs-table"><thead><tr><th>Job</th><th>Status</th><th>Model</th><th>Recipe</th><th>Progress</th><th>ETA</th><th>Created</th></tr></thead>
      <tbody></tbody></table>
    <p><button id="more" hidden>Older jobs</button></p>`;
  $("#status-filter").onchange = e => { location.hash = `#/jobs${e.target.value ? "?status=" + e.target.value : ""}`; };
  let cursor = null;
  async function load(append) {
    const q = new URLSearchParams({limit: "25"});
    if (status) q.set("status", status);
    if (append && cursor) q.set("cursor", cursor);
    const page = await api(`/v1/jobs?${q}`);
    const rows = page.data.map(j => {
      const f = j.progress && j.progress.fraction != null ? j.progress.fraction : (j.status === "succeeded" ? 1 : 0);
      return `<tr data-job="${esc(j.id)}"><td><a href="#/jobs/${esc(j.id)}">${esc(j.id)}</a></td>
        <td class="status ${esc(j.status)}">${esc(j.status)}</td><td>${esc(j.model)}</td><td>${esc(j.kind === "model-import" ? "import" : j.recipe_name || "")}</td>
        <td><span class="bar"><span style="width:${(f * 100).toFixed(0)}%"></span></span> ${esc(j.phase || "")}</td>
        <td class="eta">${etaText(j)}</td><td>${fmtTime(j.created_at)}</td></tr>`;
    }).join("");
    const body = $("#jobs-table tbody");
    if (!body) return;
    body.innerHTML = append ? body.innerHTML + rows : (rows || `<tr><td colspan="7" class="muted">No jobs yet. <a href="#/submit">Submit one</a>.</td></tr>`);
    cursor = page.next_cursor;
    $("#more").hidden = !page.has_more;
  }
  $("#more").onclick = () => load(true).catch(showError);
  await load(false);
  timer = setInterval(() => { if (!cursor) load(false).catch(() => {}); }, 3000);
}

// ------------------------------------------------------------------ one job

function metricsTable(m) {
  if (!m) return `<p class="muted">Metrics appear when the job succeeds.</p>`;
  const ppl = m.perplexity || {};
  const datasets = Object.keys(ppl.compressed || ppl.original || {});
  let rows = datasets.map(d => `<tr><td>perplexity (${esc(d)})</td><td>${(ppl.original || {})[d]?.toFixed?.(3) ?? "–"}</td>
    <td>${(ppl.compressed || {})[d]?.toFixed?.(3) ?? "–"}</td></tr>`).join("");
  for (const [d, v] of Object.entries(m.kl || {})) rows += `<tr><td>KL to original (${esc(d)})</td><td></td><td>${Number(v).toFixed(4)}</td></tr>`;
  const size = m.size || {};
  if (size.original_bytes) rows += `<tr><td>size</td><td>${fmtBytes(size.original_bytes)}</td><td>${fmtBytes(size.checkpoint_bytes || 0)}${
    size.bits_per_weight ? ` (${Number(size.bits_per_weight).toFixed(2)} bits/weight)` : ""}</td></tr>`;
  const extra = ["seconds", "peak_rss_mb"].filter(k => m[k] != null)
    .map(k => `<tr><td>${k}</td><td></td><td>${Number(m[k]).toFixed(1)}</td></tr>`).join("");
  return `<table id="metrics"><thead><tr><th>metric</th><th>original</th><th>compressed</th></tr></thead><tbody>${rows}${extra}</tbody></table>`;
}

function speedTable(m) {
  // size, quality and speed side by side: the checkpoint as compressor.load runs it, against the original
  const sp = m && m.speed;
  if (!sp) return "";
  const where = `<p class="muted">${esc(sp.device)} · ${esc(sp.dtype)} · ${esc(sp.threads)} CPU threads</p>`;
  if (sp.skipped_reason) return `<div id="speed"><h3>Speed</h3>${where}<p id="speed-skipped">Not measured: ${esc(sp.skipped_reason)}</p></div>`;
  const num = (v, d) => v == null || !isFinite(v) ? "–" : Number(v).toFixed(d);
  const ratio = (a, b) => a && b ? `${(a / b).toFixed(2)}×` : "–";
  const size = m.size || {}, w = sp.weight_bytes || {};
  let rows = `<tr><td>checkpoint</td><td>${size.original_bytes ? fmtBytes(size.original_bytes) : "–"}</td>
    <td>${size.checkpoint_bytes ? fmtBytes(size.checkpoint_bytes) : "–"}${size.bits_per_weight ? ` (${num(size.bits_per_weight, 2)} bits/weight)` : ""}</td>
    <td>${ratio(size.checkpoint_bytes, size.original_bytes)}</td></tr>`;
  if (w.original) rows += `<tr><td>weights in memory</td><td>${fmtBytes(w.original)}</td><td>${fmtBytes(w.compressed || 0)}</td><td>${ratio(w.compressed, w.original)}</td></tr>`;
  const r = sp.reload;
  if (r) rows += `<tr><td>perplexity (${esc(r.dataset)}, ${esc(r.windows)} windows): fake-quant vs reloaded</td><td>${num(r.fake_quant_perplexity, 3)}</td>
    <td>${num(r.reloaded_perplexity, 3)}</td><td class="${r.passed ? "" : "error"}">${num(100 * r.relative_difference, 3)}% ${r.passed ? "ok" : "over"} ${num(100 * r.tolerance, 2)}%</td></tr>`;
  for (const t of sp.throughput || []) {
    rows += `<tr data-phase="${esc(t.phase)}-${esc(t.batch)}"><td>${esc(t.phase)} tokens/s (batch ${esc(t.batch)}, ${esc(t.tokens_per_sequence)} tokens)</td>
      <td>${num(t.original_tokens_per_s, 1)}</td><td>${num(t.compressed_tokens_per_s, 1)}</td><td>${num(t.speedup, 2)}×</td></tr>`;
  }
  const kernels = (sp.backends || []).map(b => `${esc(b.kind)}: ${esc(b.kernel)} (${esc(b.modules)})`).join(" · ");
  return `<div id="speed"><h3>Size, quality and speed</h3>${where}<table id="speed-table"><thead><tr><th></th><th>original</th><th>compressed</th><th>ratio</th></tr></thead>
    <tbody>${rows}</tbody></table>${kernels ? `<p class="muted" id="speed-kernels">${kernels}</p>` : ""}</div>`;
}

function enginesTable(m) {
  // which engines serve the checkpoint, by which path, and why not: the export's one rule table (manifest engine_support)
  const en = m && m.engines;
  if (!en || !Object.keys(en).length) return "";
  const rows = Object.entries(en).map(([name, e]) => `<tr data-engine="${esc(name)}"><td>${esc(name)}</td>
    <td class="${e.serves ? "" : "error"}">${e.serves ? "yes" : "no"}</td><td>${esc(e.path || "–")}</td><td>${esc(e.reason || "")}</td></tr>`).join("");
  return `<div id="engines"><h3>Serving engines</h3><table id="engines-table"><thead><tr><th>engine</th><th>serves</th><th>path</th>
    <th>why not / note</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

function perplexityPlot(el, m) {
  const ppl = (m && m.perplexity) || {};
  const datasets = Object.keys(ppl.compressed || {});
  if (!datasets.length || !window.uPlot) return;
  const xs = datasets.map((_, i) => i + 1);
  const bars = uPlot.paths.bars({size: [0.35, 60], align: -1});
  new uPlot({
    title: "Perplexity: original vs compressed", width: Math.min(el.clientWidth || 480, 520), height: 240,
    scales: {x: {time: false, range: [0.4, datasets.length + 0.6]}, y: {range: (_u, _min, max) => [0, max * 1.15]}},
    axes: [{splits: () => xs, values: (_, ticks) => ticks.map(t => datasets[Math.round(t) - 1] || "")}, {}],
    series: [{}, {label: "original", stroke: "#6b7385", fill: "#6b738566", paths: bars, points: {show: false}},
             {label: "compressed", stroke: "#2f6fde", fill: "#2f6fde66", paths: uPlot.paths.bars({size: [0.35, 60], align: 1}), points: {show: false}}],
  }, [xs, datasets.map(d => (ppl.original || {})[d] ?? null), datasets.map(d => ppl.compressed[d])], el);
}

function layerErrorPlot(el, m) {
  const layers = (m && Array.isArray(m.layers)) ? m.layers.filter(l => l.layer != null && l.rel_error != null) : [];
  if (!layers.length || !window.uPlot) return;
  const byLayer = new Map();
  for (const l of layers) { const a = byLayer.get(l.layer) || []; a.push(l.rel_error); byLayer.set(l.layer, a); }
  const xs = [...byLayer.keys()].sort((a, b) => a - b);
  new uPlot({
    title: "Weight error per layer (mean relative error)", width: Math.min(el.clientWidth || 480, 520), height: 220,
    scales: {x: {time: false}}, axes: [{label: "layer"}, {}],
    series: [{}, {label: "rel. error", stroke: "#c43d3d"}],
  }, [xs, xs.map(x => byLayer.get(x).reduce((a, b) => a + b, 0) / byLayer.get(x).length)], el);
}

function progressPlot(el, events) {
  const pts = events.filter(e => e.kind === "layer" && e.data && e.data.fraction != null);
  el.innerHTML = "";
  if (pts.length < 2 || !window.uPlot) { el.innerHTML = `<p class="muted">Layer progress appears while the job runs.</p>`; return; }
  const t0 = pts[0].created_at;
  new uPlot({
    title: "Layer progress", width: Math.min(el.clientWidth || 480, 520), height: 240, scales: {x: {time: false}},
    axes: [{label: "seconds"}, {label: "fraction of stage"}],
    series: [{}, {label: "fraction", stroke: "#2f6fde"}],
  }, [pts.map(e => e.created_at - t0), pts.map(e => e.data.fraction)], el);
}

async function download(jobId, art) {
  const r = await fetch(art.url, {headers: {"Authorization": `Bearer ${apiKey()}`}});
  if (!r.ok) throw new Error(`${r.status}: download of ${art.name} failed`);
  const blob = await r.blob();
  if (art.name.endsWith(".html")) {  // the HTML report: open it, do not save it
    window.open(URL.createObjectURL(new Blob([blob], {type: "text/html"})), "_blank");
    return;
  }
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), {href: url, download: art.name.split("/").pop()});
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function jobPage(jobId) {
  view().innerHTML = `
    <h2>Job <span id="job-id">${esc(jobId)}</span></h2>
    <div class="card" id="job-summary"></div>
    <div class="grid"><div class="card"><h3>Metrics</h3><div id="job-metrics"></div><div id="job-speed"></div><div id="job-engines"></div><div id="ppl-plot"></div><div id="layer-plot"></div></div>
      <div class="card"><h3>Progress</h3><div id="progress-plot"></div></div></div>
    <div class="card"><h3>Artifacts</h3><div id="job-artifacts" class="muted">none yet</div></div>
    <div class="card"><h3>Events</h3><div class="events" id="job-events"></div></div>`;
  const events = [];
  let after = 0, plotted = false, lastStatus = null;
  async function refresh() {
    const job = await api(`/v1/jobs/${jobId}`);
    const page = await api(`/v1/jobs/${jobId}/events?after=${after}&limit=1000`);
    after = page.last_id;
    events.push(...page.data);
    const p = job.progress || {};
    const f = p.fraction != null ? p.fraction : (job.status === "succeeded" ? 1 : 0);
    $("#job-summary").innerHTML = `
      <p>Status <span id="job-status" class="status ${esc(job.status)}">${esc(job.status)}</span>
        &nbsp; phase <b id="job-phase">${esc(job.phase || "–")}</b>
        &nbsp; <span class="bar"><span style="width:${(f * 100).toFixed(0)}%"></span></span> ${(f * 100).toFixed(0)}%
        &nbsp; ETA <b id="job-eta">${etaText(job)}</b>
        ${TERMINAL.includes(job.status) || job.status === "cancelling" ? "" : `<button id="cancel">Cancel</button>`}</p>
      <p class="muted">${esc(job.model)} · ${job.kind === "model-import"
        ? `import of <code>${esc(job.spec.source)}</code> (<a href="#/models/${esc(job.model)}">model</a>)`
        : `recipe ${esc(job.recipe_name || "custom")}`} · attempt ${job.attempt}/${job.max_attempts}
        · created ${fmtTime(job.created_at)} · ran ${fmtSecs(job.duration_s)}</p>
      ${job.error ? `<p class="error" id="job-error">${esc(job.error.type)}: ${esc(job.error.message)}${job.error.stage ? ` (stage ${esc(job.error.stage)})` : ""}</p>` : ""}`;
    const cancel = $("#cancel");
    if (cancel) cancel.onclick = () => api(`/v1/jobs/${jobId}/cancel`, {method: "POST"}).then(refresh).catch(showError);
    $("#job-metrics").innerHTML = job.kind === "model-import"
      ? (job.report ? `<p>${esc(job.report.architecture)} · ${(job.report.params / 1e6).toFixed(1)}M parameters · ${
          esc(job.report.dtype)} · ${fmtBytes(job.report.total_bytes)}</p>` : `<p class="muted">The model appears when the import succeeds.</p>`)
      : metricsTable(job.report);
    $("#job-speed").innerHTML = job.kind === "model-import" ? "" : speedTable(job.report);
    $("#job-engines").innerHTML = job.kind === "model-import" ? "" : enginesTable(job.report);
    if (job.report && !plotted) {
      perplexityPlot($("#ppl-plot"), job.report);
      layerErrorPlot($("#layer-plot"), job.report);
      plotted = true;
    }
    if (page.data.length || job.status !== lastStatus) progressPlot($("#progress-plot"), events);
    const log = $("#job-events");
    for (const e of page.data) {
      const line = document.createElement("div");
      line.className = e.level;
      line.textContent = `${new Date(e.created_at * 1000).toLocaleTimeString()}  ${e.kind.padEnd(11)} ${e.message}`;
      log.appendChild(line);
    }
    if (page.data.length) log.scrollTop = log.scrollHeight;
    if (job.artifacts.length) {
      $("#job-artifacts").innerHTML = `<table id="artifacts-table"><tr><th>file</th><th>size</th><th>sha256</th></tr>${
        job.artifacts.map((a, i) => `<tr><td><a href="#" data-art="${i}">${esc(a.name)}</a></td><td>${fmtBytes(a.size)}</td>
          <td class="muted"><code>${esc(a.sha256.slice(0, 16))}…</code></td></tr>`).join("")}</table>`;
      for (const link of document.querySelectorAll("[data-art]")) {
        link.onclick = ev => { ev.preventDefault(); download(jobId, job.artifacts[+link.dataset.art]).catch(showError); };
      }
    }
    lastStatus = job.status;
    if (TERMINAL.includes(job.status)) { clearInterval(timer); timer = null; }
  }
  await refresh();
  if (!TERMINAL.includes(lastStatus)) timer = setInterval(() => refresh().catch(() => {}), 1000);
}

// ------------------------------------------------------------------ submit

async function submitPage() {
  const [models, recipes] = await Promise.all([api("/v1/models"), api("/v1/recipes")]);
  const presets = Object.fromEntries(recipes.data.map(r => [r.name, r.recipe]));
  view().innerHTML = `
    <h2>Submit a job</h2>
    <form id="submit-form" class="card">
      <label for="model">Model</label>
      <select id="model">${models.data.filter(m => m.status === "ready").map(m => `<option value="${esc(m.name)}">${esc(m.name)} (${esc(m.architecture || "")}, ${
        m.params ? (m.params / 1e6).toFixed(0) + "M params" : "?"})</option>`).join("")}</select>
      <label for="recipe-preset">Recipe preset</label>
      <select id="recipe-preset">${Object.keys(presets).map(n => `<option ${n === "w4a16-rtn" ? "selected" : ""}>${esc(n)}</option>`).join("")}</select>
      <label for="max-tokens">Evaluation tokens (eval.max_tokens)</label>
      <input id="max-tokens" type="number" min="64" step="64">
      <label for="recipe-json">Recipe (JSON, edit freely)</label>
      <textarea id="recipe-json" spellcheck="false"></textarea>
      <p><button id="submit-button" type="submit">Submit</button></p>
      <div id="submit-error" class="error"></div>
    </form>`;
  const idempotencyKey = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
  function loadPreset() {
    const recipe = structuredClone(presets[$("#recipe-preset").value] || {});
    $("#max-tokens").value = recipe.eval ? recipe.eval.max_tokens : "";
    $("#recipe-json").value = JSON.stringify(recipe, null, 2);
  }
  $("#recipe-preset").onchange = loadPreset;
  $("#max-tokens").onchange = () => {
    try {
      const recipe = JSON.parse($("#recipe-json").value);
      recipe.eval = {...(recipe.eval || {}), max_tokens: Number($("#max-tokens").value)};
      $("#recipe-json").value = JSON.stringify(recipe, null, 2);
    } catch (_) { /* the JSON error shows on submit */ }
  };
  loadPreset();
  $("#submit-form").onsubmit = async ev => {
    ev.preventDefault();
    $("#submit-error").textContent = "";
    let recipe;
    try { recipe = JSON.parse($("#recipe-json").value); } catch (e) { $("#submit-error").textContent = `recipe is not valid JSON: ${e.message}`; return; }
    try {
      const job = await api("/v1/jobs", {method: "POST", body: JSON.stringify({model: $("#model").value, recipe}),
                                         headers: {"Idempotency-Key": idempotencyKey}});
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { $("#submit-error").textContent = e.message; }
  };
}

// ------------------------------------------------------------------ models

async function modelsPage() {
  const models = await api("/v1/models");
  view().innerHTML = `
    <h2>Models</h2>
    <p class="muted">Models are shared by every API key; only the key that imported one may delete it.</p>
    <table id="models-table"><thead><tr><th>Model</th><th>Status</th><th>Architecture</th><th>Parameters</th><th>dtype</th>
      <th>Size</th><th>Imported by</th></tr></thead><tbody>${models.data.map(m => `<tr data-model="${esc(m.name)}">
        <td><a href="#/models/${esc(m.name)}">${esc(m.name)}</a></td><td class="status">${esc(m.status)}${m.import_job_id
          ? ` (<a href="#/jobs/${esc(m.import_job_id)}">job</a>)` : ""}</td><td>${esc(m.architecture || "–")}</td>
        <td>${m.params ? (m.params / 1e6).toFixed(1) + "M" : "–"}</td><td>${esc(m.dtype || "–")}</td>
        <td>${m.total_bytes ? fmtBytes(m.total_bytes) : "–"}</td><td>${esc(m.imported_by)}</td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">No models yet.</td></tr>`}</tbody></table>
    <form id="import-form" class="card">
      <h3>Import a model</h3>
      <label for="import-source">Source</label>
      <input id="import-source" size="60" placeholder="/data/models/Qwen2.5-1.5B · hf://Qwen/Qwen2.5-1.5B · s3://bucket/prefix">
      <label for="import-name">Name (optional)</label>
      <input id="import-name" size="30" placeholder="from the source">
      <label for="import-revision">Revision (hf:// only, optional)</label>
      <input id="import-revision" size="30">
      <p><button id="import-button" type="submit">Import</button></p>
      <p class="muted">Safetensors only (pickle weights are refused), never custom code; sources must be inside the
        server's allow-list (COMPRESSOR_MODEL_SOURCES).</p>
      <div id="import-error" class="error"></div>
    </form>`;
  const keys = {};  // one Idempotency-Key per distinct request: a double click imports once
  const newKey = () => crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
  $("#import-form").onsubmit = async ev => {
    ev.preventDefault();
    $("#import-error").textContent = "";
    const body = {source: $("#import-source").value.trim()};
    if ($("#import-name").value.trim()) body.name = $("#import-name").value.trim();
    if ($("#import-revision").value.trim()) body.revision = $("#import-revision").value.trim();
    try {
      const job = await api("/v1/models", {method: "POST", body: JSON.stringify(body),
                                           headers: {"Idempotency-Key": keys[JSON.stringify(body)] ||= newKey()}});
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { $("#import-error").textContent = e.message; }
  };
}

async function modelPage(name) {
  const m = await api(`/v1/models/${encodeURIComponent(name)}`);
  const s = m.support;
  const methods = s ? Object.entries(s.methods).map(([k, v]) => `<tr data-method="${esc(k)}"><td>${esc(k)}</td>
    <td class="status ${v.ok ? "succeeded" : "failed"}">${v.ok ? "applies" : "refused"}</td><td>${esc(v.reason || "")}</td></tr>`).join("") : "";
  const formats = Object.entries(m.formats || {}).map(([k, v]) => `<tr><td>${esc(k)}</td>
    <td class="status ${v.ok ? "succeeded" : "failed"}">${v.ok ? "applies" : "refused"}</td><td>${esc(v.reason || "")}</td></tr>`).join("");
  // each ready-made recipe on this model: does it apply (the submit-time check), and who serves its checkpoint
  const engineNames = ["transformers", "vllm-ampere", "vllm-hopper", "vllm-blackwell"];
  const recipes = Object.entries(m.recipes || {}).map(([k, v]) => `<tr data-recipe="${esc(k)}"><td>${esc(k)}</td>
    <td class="status ${v.applies ? "succeeded" : "failed"}" title="${esc(v.reason || "")}">${v.applies ? "applies" : "refused"}</td>${
    engineNames.map(e => { const r = (v.engines || {})[e]; return r ? `<td class="${r.serves ? "" : "muted"}" title="${esc(r.reason || r.path || "")}">${r.serves ? "yes" : "no"}</td>` : "<td>–</td>"; }).join("")}</tr>`).join("");
  view().innerHTML = `
    <h2>Model <span id="model-name">${esc(m.name)}</span></h2>
    <div class="card" id="model-summary">
      <p>Status <b id="model-status">${esc(m.status)}</b> · <span id="model-arch">${esc(m.architecture || "–")}</span> ·
        ${m.params ? (m.params / 1e6).toFixed(1) + "M parameters" : ""} · ${esc(m.dtype || "")} · ${m.total_bytes ? fmtBytes(m.total_bytes) : ""}</p>
      <p class="muted">source <code>${esc(m.source || "bundled")}</code>${m.revision ? ` @ ${esc(m.revision)}` : ""} · imported by ${esc(m.imported_by)}
        ${m.import_job_id ? ` · <a href="#/jobs/${esc(m.import_job_id)}">import job</a>` : ""}</p>
      ${s ? `<p>${s.num_layers} layers · hidden ${s.hidden_size} · MLP ${s.intermediate_size} · head dim ${s.head_dim}${
        s.family ? ` · family ${esc(s.family)}` : ""}</p>` : ""}
      ${s && !s.supported ? `<p class="error">${esc(s.reason)}</p>` : ""}
      ${m.imported_by === "you" ? `<button id="delete-model">Delete</button>` : ""}
      <div id="model-error" class="error"></div></div>
    <div class="grid"><div class="card"><h3>Methods</h3><table id="methods-table">${methods}</table></div>
      <div class="card"><h3>Formats</h3><table id="formats-table">${formats}</table></div></div>
    ${recipes ? `<div class="card"><h3>Ready-made recipes</h3><table id="recipes-table"><tr><th>recipe</th><th>on this model</th>${
      engineNames.map(e => `<th>${esc(e)}</th>`).join("")}</tr>${recipes}</table></div>` : ""}
    <div class="card"><h3>Files</h3><table id="files-table"><tr><th>file</th><th>size</th><th>sha256</th></tr>${
      (m.files || []).map(f => `<tr><td>${esc(f.name)}</td><td>${fmtBytes(f.size)}</td><td class="muted"><code>${esc(f.sha256)}</code></td></tr>`).join("")}</table></div>`;
  const del = $("#delete-model");
  if (del) del.onclick = async () => {
    try {
      const r = await fetch(`/v1/models/${encodeURIComponent(name)}`, {method: "DELETE", headers: {"Authorization": `Bearer ${apiKey()}`}});
      if (!r.ok) throw new Error(`${r.status}: ${detailText((await r.json()).detail)}`);
      location.hash = "#/models";
    } catch (e) { $("#model-error").textContent = e.message; }
  };
}

// ------------------------------------------------------------------ routing

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const [path, query] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query || "");
  $("#key-state").textContent = apiKey() ? "key set" : "no key";
  try {
    const m = path.match(/^\/jobs\/(job_[0-9a-f]{24})$/);
    if (m) await jobPage(m[1]);
    else if (path === "/submit") await submitPage();
    else if (path === "/models") await modelsPage();
    else if (path.startsWith("/models/")) await modelPage(decodeURIComponent(path.slice("/models/".length)));
    else await jobsPage(params);
  } catch (e) { showError(e); }
}

$("#key-form").onsubmit = ev => {
  ev.preventDefault();
  const key = $("#api-key").value.trim();
  if (key) localStorage.setItem("compressor-api-key", key);
  $("#api-key").value = "";
  route();
};
window.addEventListener("hashchange", route);
route();

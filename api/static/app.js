// The page talks to the same API as any client: Bearer key, POST /v1/jobs, then the
// job's server-sent events (read with fetch, since EventSource cannot send a header).
"use strict";
const $ = (id) => document.getElementById(id);
const key = () => $("key").value.trim();
$("key").value = localStorage.getItem("sdaas-key") || "";
let current = null;

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + key() } });
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error(`${r.status}: ${body?.error || r.statusText}` +
    (body?.problems ? "\n" + body.problems.join("\n") : ""));
  return body;
}

// the Style list: the served styles (GET /v1/styles, any tenant's key), the first by
// default; a choice made before the list is loaded again is kept when still served
async function loadStyles() {
  if (!key()) return;
  let body;
  try { body = await api("/v1/styles"); } catch { return; }
  const sel = $("style"), keep = sel.value;
  const same = [...sel.options].map((o) => o.value).join("\n") === body.styles.join("\n");
  if (body.styles.length && same) return;  // unchanged: the list is not redrawn
  sel.replaceChildren(...body.styles.map((s) => new Option(s, s)));
  if (!body.styles.length) sel.append(new Option("(no served styles listed)", ""));
  if (body.styles.includes(keep)) sel.value = keep;
}
$("key").addEventListener("change", loadStyles);

function log(line) { const d = $("log"); d.textContent += line + "\n"; d.scrollTop = d.scrollHeight; }

function show(event, data) {
  log(`${event} ${event === "step" ? data.step + "/" + data.of : ""}`);
  if (event === "planned") {
    $("plan").textContent = `plan: ${data.model}@${data.model_version} on ${data.accelerator}, ` +
      `${data.steps} step${data.steps === 1 ? "" : "s"}, predicted ${data.predicted_latency_s.toFixed(2)} s, CLIP ${data.predicted_clip.toFixed(1)}`;
    $("progress").max = data.steps;
  } else if (event === "step") {
    $("progress").max = data.of; $("progress").value = data.step;
    $("steps").textContent = `step ${data.step} of ${data.of}`;
  }
  const outcome = ["done", "rejected", "failed", "cancelled"];
  $("status").textContent = outcome.includes(event) ? event : (event === "step" ? "running" : event);
  if (outcome.includes(event)) {
    $("cancel").style.display = "none";
    const r = data.result || {};
    $("outcome").textContent = event === "done"
      ? `done in ${r.jct_s.toFixed(2)} s (SLO ${r.latency_slo_s} s ${r.latency_slo_met ? "met" : "missed"}), ` +
        `CLIP ${r.clip_score == null ? "-" : r.clip_score.toFixed(1)} (min ${r.min_clip} ${r.clip_slo_met ? "met" : "missed"})`
      : `${event}: ${r.error || data.error || ""}`;
    if (event === "done") loadImage(current);
    refreshOps();
  }
}

async function loadImage(jobId) {
  const r = await fetch(`/v1/jobs/${jobId}/image`, { headers: { Authorization: "Bearer " + key() } });
  if (!r.ok) return;
  $("image").src = URL.createObjectURL(await r.blob());
  $("image").style.display = "block";
}

async function follow(jobId) {
  const r = await fetch(`/v1/jobs/${jobId}/events`, { headers: { Authorization: "Bearer " + key() } });
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let event = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) show(event, JSON.parse(data));
    }
  }
}

$("submit").addEventListener("submit", async (e) => {
  e.preventDefault();
  localStorage.setItem("sdaas-key", key());
  for (const id of ["plan", "steps", "outcome", "error", "log", "status"]) $(id).textContent = "";
  $("image").style.display = "none"; $("progress").value = 0;
  try {
    if (!$("style").value) await loadStyles();  // a key typed just now: its styles first
    const job = await api("/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: $("prompt").value, style: $("style").value,
        latency_slo_s: Number($("slo").value), min_clip: Number($("clip").value) }),
    });
    current = job.job_id;
    $("job").textContent = job.job_id;
    $("cancel").style.display = "inline";
    await follow(job.job_id);
  } catch (err) { $("error").textContent = String(err.message || err); }
});

$("cancel").addEventListener("click", async () => {
  try { await api(`/v1/jobs/${current}`, { method: "DELETE" }); log("cancel requested"); }
  catch (err) { $("error").textContent = String(err.message || err); }
});

// what serving and tenants send (engine ids, nodes, model keys, job ids) goes into the
// page as text only
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// the serving processes' engines (an operator key's /v1/ops only), node by node; an
// engine that is starting, restarting, has left or is out of service says so
function engines(ops) {
  const card = $("engines-card");
  if (!Array.isArray(ops.engines)) { card.style.display = "none"; return; }
  card.style.display = "block";
  $("nodes").textContent = Object.entries(ops.nodes || {}).map(([node, n]) =>
    `${node}: ${n.in_service} of ${n.engines} in service, ${n.running} running`).join(" \u00b7 ")
    || "no serving process has reported its engines";
  const list = [...ops.engines].sort((a, b) => a.node.localeCompare(b.node) || a.engine.localeCompare(b.engine));
  const num = (v, f = (x) => x) => `<td class="num">${v == null ? "-" : esc(f(v))}</td>`;
  $("engines").querySelector("tbody").innerHTML = list.map((e, i) => {
    const first = i === 0 || list[i - 1].node !== e.node;
    const state = e.state === "serving" && e.in_service ? esc(e.state)
      : `<span class="out">${esc(e.state)}${e.in_service ? "" : " (out of service)"}</span>`;
    return `<tr data-engine="${esc(e.engine)}"><td>${first ? esc(e.node) : ""}</td><td>${esc(e.engine)}</td>` +
      `<td>${esc(e.kind)}</td><td>${state}</td><td>${e.resident.map(esc).join(", ") || "-"}</td>` +
      num(e.running) + num(e.queued) + num(e.dispatch_p99_ms, (x) => x.toFixed(1)) + "</tr>";
  }).join("") || "<tr><td class=muted colspan=8>none</td></tr>";
}

function rows(table, obj) {
  $(table).innerHTML = Object.entries(obj).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("")
    || "<tr><td class=muted>none</td></tr>";
}

async function refreshOps() {
  if (!key()) return;
  let ops;
  try { ops = await api("/v1/ops"); } catch { return; }
  rows("queues", ops.queued); rows("running", ops.running); engines(ops);
  const svg = $("attainment"), pts = ops.attainment;
  svg.innerHTML = pts.map((p, i) => {
    const h = 76 * (p.ended ? p.met / p.ended : 0), w = 600 / Math.max(pts.length, 1);
    return `<rect x="${i * w + 1}" y="${78 - h}" width="${w - 2}" height="${h}" fill="#4a8"><title>${p.met}/${p.ended}</title></rect>`;
  }).join("");
  const ended = pts.reduce((a, p) => a + p.ended, 0), met = pts.reduce((a, p) => a + p.met, 0);
  $("attainment-text").textContent = ended ? `${met} of ${ended} jobs met both SLOs (${(100 * met / ended).toFixed(0)} %)` : "no jobs ended yet";
  const tb = $("recent").querySelector("tbody");
  tb.innerHTML = ops.recent.map((j) => {
    const o = j.outcome || {};
    return `<tr><td>${esc(j.job_id)}</td><td>${esc(j.status)}</td><td>${esc(j.plan?.model)}</td><td>${esc(j.plan?.steps)}</td>` +
      `<td>${o.jct_s != null ? o.jct_s.toFixed(2) : ""}</td><td>${o.status === "done" ? (o.latency_slo_met && o.clip_slo_met ? "met" : "missed") : ""}</td></tr>`;
  }).join("");
}
loadStyles();
refreshOps();
setInterval(refreshOps, 5000);

// rtdecode monitor page: listens to /api/events (Server-Sent Events from the monitor process, never the daemon
// itself), keeps the last decodes and activity windows, and redraws plain <canvas> plots. No library, no build.
// Exact numbers are in the DOM too (data-value attributes hold each value as JavaScript prints the double).
"use strict";

const RASTER_S = 5; // seconds of spikes shown in the rasters, ending at the last decoded window
const S = {
  decodes: [], activity: [], windows: [], status: null, describe: null, describeStale: false, session: null,
  feed: null, latency: null, decodeCount: 0, rejections: [], history: 600, recorded: null, recordedAsked: 0,
};

const $ = (id) => document.getElementById(id);
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const fmt = (v, digits = 3) => (v === null || v === undefined || !isFinite(v) ? "\u2013" : Number(v).toFixed(digits));

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
}

// ------------------------------------------------------------------------------------------ state
function connect() {
  const events = new EventSource("/api/events");
  events.onopen = () => setConnection(true);
  events.onerror = () => setConnection(false); // EventSource reconnects by itself
  events.onmessage = (ev) => {
    apply(JSON.parse(ev.data));
    render();
  };
}

function setConnection(up) {
  const c = $("connection");
  c.textContent = up ? "monitor connected" : "monitor unreachable, retrying";
  c.className = "pill " + (up ? "live" : "down");
}

function apply(snap) {
  if (snap.reset) {
    S.decodes = [];
    S.activity = [];
    S.windows = [];
  }
  S.history = snap.feed.history;
  const kept = snap.feed.windows_kept || 100;
  S.decodes.push(...snap.decodes);
  if (S.decodes.length > S.history) S.decodes.splice(0, S.decodes.length - S.history);
  S.activity.push(...snap.activity);
  if (S.activity.length > kept) S.activity.splice(0, S.activity.length - kept);
  S.windows.push(...(snap.windows || []));
  if (S.windows.length > kept) S.windows.splice(0, S.windows.length - kept);
  S.status = snap.status;
  S.describe = snap.describe;
  S.describeStale = !!snap.describe_stale;
  S.session = snap.session;
  S.feed = snap.feed;
  S.latency = snap.latency;
  S.decodeCount = snap.decode_count;
  S.statusAge = snap.status_age_s;
  S.rejections = snap.rejections;
}

// the decoded variables: the description's targets when it has come, else the names the decodes carry
function targets() {
  if (S.describe && Array.isArray(S.describe.targets)) return S.describe.targets;
  const last = S.decodes[S.decodes.length - 1];
  return last ? Object.keys(last.values).map((name) => ({ name, kind: "", unit: "" })) : [];
}

// a classification target publishes a class index: compare it with the class of the recorded value (np.digitize)
function recordedAs(target, v) {
  if (v === null || v === undefined) return null;
  if (target.kind === "classification" && Array.isArray(target.bins)) return target.bins.filter((b) => b <= v).length;
  return v;
}

// ------------------------------------------------------------------------------------------ plotting
function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

function tickLabel(t, ticks) {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  const digits = Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));
  return t.toFixed(digits);
}

// A plot area with axes: returns {ctx, x(v), y(v), box}; axes labelled with units.
function frame(canvas, xr, yr, xlabel, ylabel) {
  const h = Number(canvas.dataset.height || 150);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.height = h + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const box = { l: 58, r: w - 10, t: 8, b: h - 32 };
  const x = (v) => box.l + ((v - xr[0]) / (xr[1] - xr[0] || 1)) * (box.r - box.l);
  const y = (v) => box.b - ((v - yr[0]) / (yr[1] - yr[0] || 1)) * (box.b - box.t);
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  const xt = niceTicks(xr[0], xr[1], Math.max(3, Math.floor((box.r - box.l) / 90)));
  const yt = niceTicks(yr[0], yr[1], Math.max(2, Math.floor((box.b - box.t) / 28)));
  ctx.strokeStyle = css("--grid");
  ctx.fillStyle = css("--muted");
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of xt) {
    const px = Math.round(x(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(px, box.t);
    ctx.lineTo(px, box.b);
    ctx.stroke();
    ctx.fillText(tickLabel(t, xt), px, box.b + 4);
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of yt) {
    const py = Math.round(y(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(box.l, py);
    ctx.lineTo(box.r, py);
    ctx.stroke();
    ctx.fillText(tickLabel(t, yt), box.l - 6, py);
  }
  ctx.strokeStyle = css("--border");
  ctx.strokeRect(box.l + 0.5, box.t + 0.5, box.r - box.l, box.b - box.t);
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  ctx.fillText(xlabel, (box.l + box.r) / 2, h - 1);
  ctx.save();
  ctx.translate(12, (box.t + box.b) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "middle";
  ctx.fillText(ylabel, 0, 0);
  ctx.restore();
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.l, box.t, box.r - box.l, box.b - box.t);
  ctx.clip(); // callers draw inside the box; restore() with done()
  return { ctx, x, y, box, done: () => ctx.restore() };
}

function range(values, pad = 0.08) {
  const v = values.filter((a) => a !== null && a !== undefined && isFinite(a));
  if (!v.length) return [0, 1];
  let lo = Math.min(...v);
  let hi = Math.max(...v);
  if (hi === lo) {
    lo -= 0.5;
    hi += 0.5;
  }
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}

function line(p, xs, ys, color, width) {
  const { ctx } = p;
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (ys[i] === null || ys[i] === undefined || !isFinite(ys[i])) {
      pen = false;
      continue;
    }
    pen ? ctx.lineTo(p.x(xs[i]), p.y(ys[i])) : ctx.moveTo(p.x(xs[i]), p.y(ys[i]));
    pen = true;
  }
  ctx.stroke();
}

function timeSpan() {
  const d = S.decodes;
  return d.length ? [d[0].t_start, d[d.length - 1].t_end] : [0, 1];
}

// ------------------------------------------------------------------------------------------ panels
function drawTraces() {
  const box = $("traces");
  const ts = targets();
  if (!ts.length) return;
  box.querySelector(".empty")?.remove();
  const xr = timeSpan();
  const xs = S.decodes.map((d) => (d.t_start + d.t_end) / 2);
  for (const t of ts) {
    let canvas = box.querySelector(`canvas[data-name="${CSS.escape(t.name)}"]`);
    if (!canvas) {
      canvas = el("canvas", { class: "plot trace", "data-name": t.name, "data-height": "150" });
      box.appendChild(canvas);
    }
    const dec = S.decodes.map((d) => d.values[t.name]);
    const rec = S.decodes.map((d) => recordedAs(t, d.recorded ? d.recorded[t.name] : null));
    const unit = t.kind === "classification" ? "class index" : t.unit || "";
    const p = frame(canvas, xr, range(dec.concat(rec)), "session time (s)", unit ? `${t.name} (${unit})` : t.name);
    line(p, xs, rec, css("--recorded"), 1.5);
    line(p, xs, dec, css("--decoded"), 1.8);
    p.done();
  }
  $("recorded-key").classList.toggle("hidden", !S.session);
}

function drawLatest() {
  const last = S.decodes[S.decodes.length - 1];
  if (!last) return;
  const table = $("latest");
  table.dataset.window = String(last.window);
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const t of targets()) {
    const v = last.values[t.name];
    const r = recordedAs(t, last.recorded ? last.recorded[t.name] : null);
    const tr = el("tr");
    tr.appendChild(el("th", {}, t.name));
    const dv = el("td", { class: "num" });
    dv.appendChild(el("span", { class: "decode-value", "data-name": t.name, "data-value": String(v) }, fmt(v)));
    tr.appendChild(dv);
    const rv = el("td", { class: "num" });
    rv.appendChild(el("span", { class: "recorded-value", "data-name": t.name, "data-value": String(r) }, fmt(r)));
    tr.appendChild(rv);
    tr.appendChild(el("td", {}, t.kind === "classification" ? "class" : t.unit || ""));
    body.appendChild(tr);
  }
  $("latest-meta").textContent =
    `window ${last.window}: [${fmt(last.t_start)}, ${fmt(last.t_end)}) s, ${last.n_spikes} spikes` +
    (last.truncated ? `, ${last.truncated} cut` : "") + `, ${fmt(last.latency_ms, 2)} ms`;
  $("last-window").textContent = String(last.window);
  $("last-time").textContent = fmt(last.t_end, 2) + " s";
}

function drawCounts() {
  const xr = timeSpan();
  const p = frame($("counts"), xr, [0, Math.max(1, ...S.decodes.map((d) => d.n_spikes)) * 1.1], "session time (s)", "spikes / window");
  for (const d of S.decodes) {
    const x0 = p.x(d.t_start) + 0.5;
    const w = Math.max(1, p.x(d.t_end) - p.x(d.t_start) - 1);
    p.ctx.fillStyle = css("--decoded");
    p.ctx.fillRect(x0, p.y(d.n_spikes), w, p.y(0) - p.y(d.n_spikes));
    if (d.truncated) {
      p.ctx.fillStyle = css("--bad");
      p.ctx.fillRect(x0, p.y(d.n_spikes), w, p.y(0) - p.y(d.truncated));
    }
  }
  p.done();
}

function nNeurons() {
  if (S.describe && S.describe.neurons) return S.describe.neurons.n;
  if (S.session) return S.session.n_neurons;
  let n = 1;
  for (const a of S.activity.concat(S.windows)) for (const k of a.neurons) n = Math.max(n, k + 1);
  return n;
}

// the last RASTER_S seconds decoded (less when fewer have been kept)
function rasterSpan() {
  if (!S.decodes.length) return [0, RASTER_S];
  const end = S.decodes[S.decodes.length - 1].t_end;
  return [Math.max(end - RASTER_S, S.decodes[0].t_start), end];
}

function raster(canvas, xr, times, neurons, color) {
  const n = nNeurons();
  const p = frame(canvas, xr, [-0.5, n - 0.5], "session time (s)", "neuron (model index)");
  const h = Math.max(1, Math.min(4, (p.box.b - p.box.t) / n));
  p.ctx.fillStyle = color;
  for (let i = 0; i < times.length; i++) p.ctx.fillRect(p.x(times[i]) - 0.6, p.y(neurons[i]) - h / 2, 1.2, h);
  return p;
}

// the incoming spikes: as the daemon windowed them (`window` messages, serve --publish-windows) when it publishes
// them, else the --session file's spikes over the same span (what was replayed, not what arrived)
function drawIncomingRaster() {
  const xr = rasterSpan();
  const canvas = $("incoming-raster");
  const live = S.windows.length > 0;
  $("incoming-live").classList.toggle("hidden", !live);
  $("incoming-file").classList.toggle("hidden", live);
  if (live) {
    const shown = S.windows.filter((w) => w.t_end > xr[0]);
    const times = shown.flatMap((w) => w.times);
    const neurons = shown.flatMap((w) => w.neurons);
    raster(canvas, xr, times, neurons, css("--spike")).done();
    $("incoming-spike-count").textContent = String(times.length);
    $("incoming-window-count").textContent = String(shown.length);
    return;
  }
  if (!S.session) {
    frame(canvas, xr, [0, 1], "session time (s)", "neuron").done();
    message(canvas, "no incoming spikes: run serve --publish-windows, or give --session");
    return;
  }
  const now = Date.now();
  if (S.decodes.length && now - S.recordedAsked > 500 && (!S.recorded || S.recorded.t1 !== xr[1])) {
    S.recordedAsked = now;
    fetch(`/api/recorded?t0=${xr[0]}&t1=${xr[1]}`)
      .then((r) => (r.ok ? r.json() : null))
      .then((data) => {
        S.recorded = data;
        drawIncomingRaster();
      })
      .catch(() => {});
  }
  const r = S.recorded || { times: [], neurons: [] };
  raster(canvas, xr, r.times, r.neurons, css("--spike")).done();
}

function drawPredictedRaster() {
  const xr = rasterSpan();
  const canvas = $("predicted-raster");
  const length = S.describe && S.describe.window ? S.describe.window.length_s : 0.05;
  const shown = S.activity.filter((a) => a.t_start + length > xr[0]);
  const times = shown.flatMap((a) => a.times);
  const neurons = shown.flatMap((a) => a.neurons);
  const p = raster(canvas, xr, times, neurons, css("--predicted"));
  p.ctx.fillStyle = "rgba(126, 231, 135, 0.07)";
  for (const a of shown) p.ctx.fillRect(p.x(a.t_start), p.box.t, p.x(a.t_start + length) - p.x(a.t_start), p.box.b - p.box.t);
  p.done();
  if (!S.activity.length) message(canvas, "no activity messages (the daemon publishes them with --generate)");
}

function message(canvas, text) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = css("--muted");
  ctx.font = "12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(text, canvas.clientWidth / 2 + 24, Number(canvas.dataset.height) / 2 - 10);
}

function drawLatency() {
  const lat = S.decodes.map((d) => d.latency_ms).filter((v) => v !== null && isFinite(v));
  const lp = S.latency || {};
  const dp = (S.status && S.status.latency_ms) || {};
  const hi = Math.max(1e-3, ...lat, lp.p99 || 0) * 1.05;
  const bins = 40;
  const counts = new Array(bins).fill(0);
  for (const v of lat) counts[Math.min(bins - 1, Math.floor((v / hi) * bins))]++;
  const p = frame($("latency"), [0, hi], [0, Math.max(1, ...counts) * 1.1], "latency (ms)", "decodes");
  p.ctx.fillStyle = css("--decoded");
  for (let i = 0; i < bins; i++) {
    const x0 = p.x((i * hi) / bins);
    p.ctx.fillRect(x0 + 0.5, p.y(counts[i]), p.x(((i + 1) * hi) / bins) - x0 - 1, p.y(0) - p.y(counts[i]));
  }
  for (const [v, color, label] of [[lp.p50, css("--ok"), "p50"], [lp.p99, css("--recorded"), "p99"]]) {
    if (v === null || v === undefined) continue;
    p.ctx.strokeStyle = color;
    p.ctx.lineWidth = 1.5;
    p.ctx.beginPath();
    p.ctx.moveTo(p.x(v), p.box.t);
    p.ctx.lineTo(p.x(v), p.box.b);
    p.ctx.stroke();
    p.ctx.fillStyle = color;
    const left = p.x(v) + 30 > p.box.r; // near the right edge: label on the line's left
    p.ctx.textAlign = left ? "right" : "left";
    p.ctx.textBaseline = "top";
    p.ctx.fillText(label, p.x(v) + (left ? -3 : 3), p.box.t + 2);
  }
  p.done();
  $("lat-n").textContent = `(${lp.n || 0})`;
  $("lat-p50").textContent = fmt(lp.p50, 2);
  $("lat-p99").textContent = fmt(lp.p99, 2);
  $("daemon-p50").textContent = fmt(dp.p50, 2);
  $("daemon-p99").textContent = fmt(dp.p99, 2);
  $("daemon-p999").textContent = fmt(dp["p99.9"], 2);
  $("daemon-max").textContent = fmt(dp.max, 2);
  const deadline = S.describe ? S.describe.deadline_ms : null;
  const misses = S.status ? S.status.deadline_misses : null;
  $("deadline").textContent =
    "All times in ms. " + (deadline ? `Deadline ${fmt(deadline, 1)} ms per window` : "") +
    (misses !== null && misses !== undefined ? `; ${misses} missed so far.` : "");
}

function chip(name, value, cls) {
  const c = el("span", { class: "chip " + cls, "data-counter": name });
  c.appendChild(el("span", {}, name));
  c.appendChild(el("b", {}, String(value)));
  return c;
}

function drawCounters() {
  const counters = (S.status && S.status.counters) || {};
  const rej = $("rejections");
  rej.replaceChildren();
  const reasons = [...S.rejections].sort((a, b) => (counters[b] || 0 ? 1 : 0) - (counters[a] || 0 ? 1 : 0));
  for (const name of reasons) {
    const v = counters[name] || 0;
    rej.appendChild(chip(name, v, "reject" + (v ? " nonzero" : "")));
  }
  const other = $("counters");
  other.replaceChildren();
  for (const name of Object.keys(counters).sort()) {
    if (!S.rejections.includes(name)) other.appendChild(chip(name, counters[name], "counter"));
  }
  const st = S.status;
  const state = $("daemon-state");
  state.replaceChildren();
  if (st) {
    state.append("daemon ", el("b", {}, String(st.backend)), `, ${st.streaming ? "streaming" : "decode at close"}, `);
    state.append(el("b", {}, String(st.windows)), " windows, up ", el("b", {}, fmt(st.uptime_s, 0) + " s"));
    if (st.overloaded) state.append(" ", el("b", { class: "overloaded" }, "overloaded"));
    const interval = (S.describe && S.describe.status_interval_s) || 1;
    if (S.statusAge > 3 * interval + 1) state.append(" ", el("b", { class: "overloaded" }, `silent for ${fmt(S.statusAge, 0)} s`));
  }
}

function drawDescribe() {
  const d = S.describe;
  $("waiting").classList.toggle("hidden", !!d && !S.describeStale);
  $("waiting").textContent = d
    ? "The daemon's status names another model than its description: asking it for the new one\u2026"
    : "Waiting for the daemon's description (asking it every few seconds)\u2026";
  if (!d) return;
  const dl = $("describe");
  dl.replaceChildren();
  const row = (k, v) => {
    dl.appendChild(el("dt", {}, k));
    dl.appendChild(el("dd", {}, v));
  };
  const m = d.model || {};
  const w = d.window || {};
  row("protocol", `${d.protocol}${d.ready ? ", ready" : ", not ready"}`);
  row("model", `${String(m.sha256 || "").slice(0, 12)}\u2026 step ${m.step}`);
  row("backend", `${m.backend}${m.streaming ? ", streaming" : ""}${m.generate ? ", generates activity" : ""}`);
  row("window", `${fmt(w.length_s * 1e3, 0)} ms from ${fmt(w.origin_s, 3)} s, quantum ${fmt(w.quantum_s * 1e3, 1)} ms, history ${fmt(w.history_s * 1e3, 0)} ms`);
  if (d.neurons) row("neurons", `${d.neurons.n} (unit IDs ${d.neurons.unit_ids.slice(0, 3).join(", ")}${d.neurons.n > 3 ? ", \u2026" : ""})`);
  row("decodes", (d.targets || []).map((t) => `${t.name} (${t.kind}${t.unit ? ", " + t.unit : ""})`).join("; ") || "none");
  row("behavior in", (d.behavior_inputs || []).map((b) => `${b.name} (${fmt(b.window_s * 1e3, 0)} ms)`).join("; ") || "none");
  row("frames", d.frames ? `${d.frames.width}\u00d7${d.frames.height}, ${d.frames.n_frames} per window, ${fmt(d.frames.rate_hz, 1)} Hz` : "none");
  row("deadline", `${fmt(d.deadline_ms, 1)} ms`);
}

function drawFooter() {
  const f = S.feed;
  if (!f) return;
  const dropped = Object.entries(f.dropped).map(([k, v]) => `${k} ${v}`).join(", ");
  const session = S.session ? ` Recorded session: ${S.session.source || "given"} (${S.session.n_neurons} neurons, ${fmt(S.session.start, 1)}\u2013${fmt(S.session.stop, 1)} s).` : "";
  $("feed-info").textContent =
    `Subscribed to ${f.output}; messages received: ` +
    Object.entries(f.received).map(([k, v]) => `${k} ${v}`).join(", ") +
    `. Not understood by this monitor: ${dropped || "none"}. Keeps the last ${f.history} decodes.` + session;
  $("session-name").textContent = S.session && S.session.source ? `session ${S.session.source}` : "";
}

function render() {
  $("decode-count").textContent = String(S.decodeCount);
  drawDescribe();
  drawTraces();
  drawLatest();
  drawCounts();
  drawIncomingRaster();
  drawPredictedRaster();
  drawLatency();
  drawCounters();
  drawFooter();
}

window.addEventListener("resize", render);
connect();

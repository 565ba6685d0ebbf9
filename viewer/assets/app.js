// ads viewer page. Everything arrives over one websocket (see viewer/src/ws.rs for the
// message shapes); overlays come precomputed from the viewer and are drawn here.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = { lane: "rgb(0,230,0)", area: "rgba(0,200,80,0.3)", centre: "rgb(255,220,0)",
  object: "rgb(255,64,160)", truth: "rgb(0,200,255)", warn: "rgb(255,70,40)", text: "#fff" };
const LAYERS = ["lanes", "area", "centre", "objects", "hud", "truth", "stale"];
const HISTORY_MS = 60000;

// Exposed for tests and the latency benchmark.
const stats = window.adsStats = { framesDrawn: 0, lastFrameId: null, dropped: 0, skippedDecode: 0, acks: [], paints: [] };

let ws = null;
let wsOpen = false;
let link = "connecting";
let lastFrame = null;         // { bitmap, header }
let pendingFrame = null;      // newest frame waiting to be decoded
let decoding = false;
let unreported = [];
let requestCounter = 0;
const history = [];
// An e-stop pressed while the viewer cannot be reached is kept here and sent on reconnect;
// one the viewer took is retried by it until the vehicle confirms (estopRequest names it).
let estopWaiting = false;
let estopRequest = null;

// Numbers from the vehicle are untrusted: anything not a finite number shows as "–".
function num(v, digits) { return (typeof v === "number" && Number.isFinite(v)) ? v.toFixed(digits) : "–"; }
function finite(v) { return typeof v === "number" && Number.isFinite(v); }

function nowNs() { return Math.round((performance.timeOrigin + performance.now()) * 1e6); }

function layerOn(name) { return $("layer-" + name).checked; }

// The access token, when the viewer is open to the network: from ?token= once, then
// remembered by this browser.
let token = new URLSearchParams(location.search).get("token") || localStorage.getItem("adsToken") || "";
if (token) localStorage.setItem("adsToken", token);

async function start() {
  let res;
  try {
    res = await fetch("/api/session" + (token ? "?token=" + encodeURIComponent(token) : ""));
  } catch (err) {
    setLink("offline");
    setTimeout(start, 1000);
    return;
  }
  if (res.status === 401) {
    $("login").classList.remove("hidden");
    $("login-error").textContent = token ? "That token was refused." : "";
    $("token-input").focus();
    return;
  }
  $("login").classList.add("hidden");
  connect(250);
}

$("login").onsubmit = (e) => {
  e.preventDefault();
  token = $("token-input").value.trim();
  localStorage.setItem("adsToken", token);
  start();
};

function connect(delay) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : ""));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { wsOpen = true; delay = 250; refreshControls(); offerCodecs(); if (estopWaiting) sendEstop(); };
  ws.onclose = () => {
    wsOpen = false;
    setLink("offline");
    // Through start(): the viewer may have restarted with another token.
    setTimeout(start, delay || 250);
  };
  ws.onmessage = (e) => {
    try {
      if (typeof e.data === "string") onText(JSON.parse(e.data));
      else onFrame(e.data);
    } catch (err) {
      // One bad message must not stop the page from drawing the next ones.
      console.warn("message not understood", err);
    }
  };
}

function onFrame(buffer) {
  const view = new DataView(buffer);
  const headerLen = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLen)));
  header.browser_recv_ns = nowNs();
  if (header.codec === "h264") { onH264(header, new Uint8Array(buffer, 4 + headerLen)); return; }
  const jpeg = new Blob([new Uint8Array(buffer, 4 + headerLen)], { type: "image/jpeg" });
  // Newest wins: a frame that arrives while another decodes replaces any waiting one.
  if (pendingFrame) stats.skippedDecode++;
  pendingFrame = { header, jpeg };
  if (!decoding) decodeNext();
}

async function decodeNext() {
  decoding = true;
  while (pendingFrame) {
    const { header, jpeg } = pendingFrame;
    pendingFrame = null;
    try {
      show(await createImageBitmap(jpeg), header);
    } catch (err) {
      console.warn("undecodable frame", err);
    }
  }
  decoding = false;
}

// A decoded picture (JPEG or H.264): drawn with its overlay, its paint time reported.
function show(bitmap, header) {
  if (lastFrame) lastFrame.bitmap.close();
  lastFrame = { bitmap, header };
  draw();
  requestAnimationFrame(() => {
    const painted = nowNs();
    unreported.push([header.recv_ns, header.capture_ns, painted]);
    stats.paints.push({ frame_id: header.frame_id, capture_ns: header.capture_ns, recv_ns: header.recv_ns,
      browser_recv_ns: header.browser_recv_ns, painted_ns: painted, dropped: header.dropped,
      skipped: stats.skippedDecode, codec: header.codec || "jpeg", decode_ms: header.decode_ms });
    if (stats.paints.length > 20000) stats.paints.splice(0, 10000);
  });
}

// H.264 through WebCodecs. Chromium exposes VideoDecoder only in a secure context (https,
// or http on 127.0.0.1/localhost); elsewhere the page asks for JPEG and says why. The viewer
// has decoded every access unit once already, so only sound bitstreams arrive here; if the
// decoder fails anyway, the page asks for a keyframe and gets JPEG until then.
const H264_CODEC = "avc1.42E01E";
const h264 = { supported: false, decoder: null, headers: [], note: "JPEG" };
stats.h264 = { decoded: 0, errors: 0, decodeMs: [] };

async function probeH264() {
  if (!window.isSecureContext) { h264.note = "JPEG: H.264 needs a secure context (https or 127.0.0.1)"; return; }
  if (!("VideoDecoder" in window)) { h264.note = "JPEG: this browser has no WebCodecs"; return; }
  try {
    const r = await VideoDecoder.isConfigSupported({ codec: H264_CODEC, optimizeForLatency: true });
    h264.supported = !!r.supported;
  } catch (err) { h264.supported = false; }
  h264.note = h264.supported ? "H.264 (WebCodecs)" : "JPEG: this browser cannot decode " + H264_CODEC;
}
const h264Probe = probeH264();

async function offerCodecs() {
  await h264Probe;
  if (wsOpen) ws.send(JSON.stringify({ type: "codecs", accept: h264.supported ? ["h264", "jpeg"] : ["jpeg"] }));
}

function resetH264() {
  if (h264.decoder && h264.decoder.state !== "closed") h264.decoder.close();
  h264.decoder = null;
  h264.headers = [];
  if (wsOpen) ws.send(JSON.stringify({ type: "keyframe" }));
}

function onH264(header, data) {
  if (!h264.decoder) {
    if (!header.keyframe) return;
    h264.decoder = new VideoDecoder({
      output: onH264Picture,
      error: (err) => { console.warn("H.264 decoder", err); stats.h264.errors++; resetH264(); },
    });
    h264.decoder.configure({ codec: H264_CODEC, optimizeForLatency: true });
  }
  // Every access unit is decoded (the next ones refer to it); only the newest is painted.
  header.decode_start = performance.now();
  h264.headers.push(header);
  if (h264.headers.length > 64) h264.headers.shift();
  try {
    h264.decoder.decode(new EncodedVideoChunk({ type: header.keyframe ? "key" : "delta", timestamp: header.frame_id, data }));
  } catch (err) { console.warn("H.264 chunk", err); stats.h264.errors++; resetH264(); }
}

async function onH264Picture(frame) {
  const at = h264.headers.findIndex((h) => h.frame_id === frame.timestamp);
  const header = at >= 0 ? h264.headers.splice(0, at + 1).pop() : null;
  if (!header || !h264.decoder || h264.decoder.decodeQueueSize > 0) { frame.close(); if (header) stats.skippedDecode++; return; }
  header.decode_ms = performance.now() - header.decode_start;
  stats.h264.decoded++;
  stats.h264.decodeMs.push(header.decode_ms);
  if (stats.h264.decodeMs.length > 20000) stats.h264.decodeMs.splice(0, 10000);
  try { show(await createImageBitmap(frame), header); } finally { frame.close(); }
}

function draw() {
  if (!lastFrame) return;
  const { bitmap, header } = lastFrame;
  const c = $("video");
  if (c.width !== bitmap.width || c.height !== bitmap.height) { c.width = bitmap.width; c.height = bitmap.height; }
  const g = c.getContext("2d");
  g.drawImage(bitmap, 0, 0);
  drawOverlay(g, header.overlay || {});
  stats.framesDrawn++;
  stats.lastFrameId = header.frame_id;
  stats.lastHeader = header;
  stats.dropped = header.dropped;
  const codec = header.codec === "h264" ? "H.264" : (h264.supported ? "JPEG" : h264.note);
  $("frame-info").textContent = `frame ${header.frame_id} · ${bitmap.width}×${bitmap.height} · ${codec} · dropped here ${header.dropped}`;
  $("banner").classList.toggle("hidden", link === "live");
}

function polyline(g, pts, width, color) {
  if (!Array.isArray(pts) || pts.length < 2) return;
  g.strokeStyle = color; g.lineWidth = width; g.beginPath();
  let started = false;
  for (const p of pts) {
    if (!Array.isArray(p) || !finite(p[0]) || !finite(p[1])) { started = false; continue; }
    if (started) g.lineTo(p[0], p[1]); else { g.moveTo(p[0], p[1]); started = true; }
  }
  g.stroke();
}

function label(g, x, y, text, color, size) {
  g.font = `bold ${size}px monospace`;
  const w = g.measureText(text).width;
  g.fillStyle = "rgba(0,0,0,0.55)"; g.fillRect(x - 3, y - 2, w + 6, size + 6);
  g.fillStyle = color; g.textBaseline = "top"; g.fillText(text, x, y);
  return w;
}

function drawOverlay(g, o) {
  const lanes = o.lanes;
  if (lanes) {
    if (layerOn("area") && Array.isArray(lanes.area) && lanes.area.length > 2) {
      g.fillStyle = COLORS.area; g.beginPath();
      g.moveTo(lanes.area[0][0], lanes.area[0][1]);
      for (const p of lanes.area.slice(1)) g.lineTo(p[0], p[1]);
      g.closePath(); g.fill();
    }
    if (layerOn("lanes")) { polyline(g, lanes.left, 4, COLORS.lane); polyline(g, lanes.right, 4, COLORS.lane); }
    if (layerOn("centre")) {
      polyline(g, lanes.centre, 2, COLORS.centre);
      const b = Array.isArray(lanes.centre) ? lanes.centre[lanes.centre.length - 1] : null;
      if (b && finite(b[0]) && finite(b[1])) label(g, b[0] - 40, b[1] - 28, `${lanes.offset_m >= 0 ? "+" : ""}${num(lanes.offset_m, 2)} m`, COLORS.centre, 16);
    }
  }
  if (layerOn("truth")) for (const line of o.truth || []) polyline(g, line, 2, COLORS.truth);
  if (layerOn("objects")) {
    for (const b of o.objects || []) {
      if (![b.x, b.y, b.w, b.h].every(finite)) continue;
      g.strokeStyle = COLORS.object; g.lineWidth = 3; g.strokeRect(b.x, b.y, b.w, b.h);
      label(g, b.x, Math.max(0, b.y - 16), `${b.label} ${num(b.score * 100, 0)}%`, COLORS.object, 12);
    }
  }
  if (layerOn("hud") && o.hud) {
    const h = o.hud;
    const lines = [
      `${num(h.speed_kmh, 1).padStart(5)} km/h (target ${num(h.target_kmh, 0)})  ${h.mode}`,
      `steer ${(h.steering_deg >= 0 ? "+" : "") + num(h.steering_deg, 1)}°  thr ${num(h.throttle, 2)}  brk ${num(h.brake, 2)}`,
      `${h.source} ${num(h.fps, 1)} fps`,
    ];
    lines.forEach((t, i) => label(g, 8, 8 + i * 22, t, COLORS.text, 16));
  }
  if (layerOn("stale")) {
    (o.stale || []).forEach((t, i) => {
      g.font = "bold 16px monospace";
      const w = g.measureText(t).width;
      label(g, g.canvas.width - w - 10, 8 + i * 22, t, COLORS.warn, 16);
    });
  }
}

function setLink(status) {
  link = status;
  const el = $("link");
  el.textContent = status === "offline" ? "viewer offline" : "vehicle " + status;
  el.className = "pill " + status;
  const banner = $("banner");
  banner.textContent = { connecting: "waiting for the vehicle…", lost: "vehicle link lost — reconnecting…",
    offline: "viewer connection lost — reconnecting…" }[status] || "";
  banner.classList.toggle("hidden", status === "live");
  refreshControls();
}

function refreshControls() {
  const usable = wsOpen && link === "live";
  // Never the e-stop: with the link down a press is kept and retried (showEstop says so).
  for (const id of ["btn-pause", "btn-resume", "btn-reset", "btn-respawn", "btn-speed"]) $(id).disabled = !usable;
  $("btn-estop").disabled = false;
  showEstop();
}

function showEstop() {
  const el = $("estop-status");
  let text = "";
  if (estopWaiting) text = "E-STOP NOT DELIVERED YET — the viewer is unreachable; kept and sent on reconnect";
  else if (estopRequest) text = link === "live" ? "E-STOP sent — waiting for the vehicle to confirm (retrying)"
    : "E-STOP sent — vehicle link down, the viewer keeps retrying until the vehicle confirms";
  el.textContent = text;
  el.classList.toggle("hidden", !text);
}

function sendEstop() {
  estopWaiting = true;
  if (ws && ws.readyState === WebSocket.OPEN) {
    estopRequest = "r" + (++requestCounter);
    ws.send(JSON.stringify({ type: "action", request_id: estopRequest, command: { type: "emergency_stop" } }));
    estopWaiting = false;
  }
  showEstop();
}

function onText(m) {
  switch (m.type) {
    case "hello":
      $("vehicle").textContent = m.vehicle ? "vehicle " + m.vehicle : "no vehicle yet";
      history.length = 0; history.push(...m.history);
      setLink(m.link);
      if (window.adsDrive) window.adsDrive.onHello(m);
      break;
    case "you": if (window.adsDrive) window.adsDrive.onYou(m); break;
    case "control": if (window.adsDrive) window.adsDrive.onControl(m); break;
    case "drive_refused": if (window.adsDrive) window.adsDrive.onRefused(m); break;
    case "link":
      setLink(m.status);
      // Back after an outage: said for a while, so the operator sees the data is fresh again.
      if (m.back) {
        addEvent("vehicle link back", "info");
        $("link").textContent = "vehicle link back";
        setTimeout(() => { if (link === "live") $("link").textContent = "vehicle live"; }, 3000);
      }
      break;
    case "state": onState(m); break;
    case "sent": showAck({ status: "sent", command: m.command, detail: "waiting for the vehicle…", request_id: m.request_id }); break;
    case "ack":
      if (m.outcome && m.outcome.request_id === estopRequest && m.outcome.status !== "not_sent") { estopRequest = null; showEstop(); }
      showAck(m.outcome);
      break;
    case "notice": addEvent(m.text, m.level); break;
    case "error": addEvent("viewer: " + m.detail, "error"); break;
  }
}

function onState(m) {
  const s = m.state;
  if (window.adsDrive) window.adsDrive.onState(s);
  if (link !== "live") setLink("live");

  $("replay").hidden = s.source !== "replay";
  const c = s.commands || {};
  const rows = [
    ["mode", s.mode + (s.paused && s.mode !== "paused" ? " (paused)" : "")],
    ["e-stop", c.estop_latched ? "LATCHED (reset, then resume)" : (c.held ? "released, holding (resume)" : "–")],
    ["latch on disk", c.latch_error ? `NOT PERSISTED: ${c.latch_error}` : "ok"],
    ["operator", c.operator_required ? (finite(c.operator_heartbeat_age_ms) ? `required · heard ${c.operator_heartbeat_age_ms} ms ago` : "required · none yet") : "not required"],
    ["speed", `${num(s.speed_mps * 3.6, 1)} km/h`],
    ["target", `${num(s.target_speed_mps, 1)} m/s`],
    ["steering", `${num(s.steering_rad * 180 / Math.PI, 1)}°`],
    ["throttle / brake", `${num(s.throttle, 2)} / ${num(s.brake, 2)}`],
    ["fps", num(s.fps, 1)],
    ["source · control", `${s.source} · ${s.control}`],
    ["distance", `${num(s.distance_m, 0)} m`],
    ["stop reason", (s.health && s.health.stop_reason) || "–"],
  ];
  fillTable("hud", rows);
  showOutputs(s.actuator);
  const fmt = (v) => num(v, 1);
  const h = m.hops || {};
  fillTable("hops", [
    ["capture → detection", fmt(h.capture_to_detection_ms)],
    ["detection → vehicle", fmt(h.detection_to_vehicle_ms)],
    ["vehicle → viewer", fmt(h.vehicle_to_viewer_ms)],
    ["viewer → browser", fmt(h.viewer_to_browser_ms)],
    ["capture → browser", fmt(h.capture_to_browser_ms)],
  ]);
  // The vehicle's own stages of its last frame (state.timings, µs), to see at a glance which
  // one a slow hop comes from.
  const t = s.timings || {}, us = (v) => (finite(v) ? `${v} µs` : "–");
  fillTable("stages", [
    ["capture (render)", us(finite(t.source_us) && finite(t.noise_us) && finite(t.ring_write_us)
      ? t.source_us - t.noise_us - t.ring_write_us : t.source_us)],
    ["sensor noise", us(t.noise_us)],
    ["ring write", us(t.ring_write_us)],
    ["encode", us(t.encode_us)],
    ["send", us(t.send_us)],
    ["control", us(t.control_us)],
  ]);
  showVideoLink(m.video, s.link);
  const d = s.drops || {}, v = m.viewer || {};
  fillTable("drops", [
    ["vehicle: not broadcast", d.frames_not_broadcast],
    ["vehicle: overrun", d.frames_overrun],
    ["vehicle: messages", d.messages_dropped],
    ["vehicle: actions rejected", d.actions_rejected],
    ["viewer: frames missed", v.frames_missed],
    ["viewer: to slow browsers", v.frames_dropped_clients],
    ["this browser", stats.dropped],
  ]);
  const last = history[history.length - 1];
  if (m.sample && finite(m.sample.t_ms)) {
    if (!last || m.sample.t_ms - last.t_ms >= 100) history.push(m.sample);
    while (history.length && history[0].t_ms < m.sample.t_ms - HISTORY_MS) history.shift();
  }
}

// The video link as this viewer gets it; "link slow" while the vehicle holds it below its
// best tier or full rate (telemetry and the buttons are unaffected: they travel apart).
function showVideoLink(v, link) {
  if (!v) return;
  const mbit = (kbps) => finite(kbps) ? `${num(kbps / 1000, 2)} Mbit/s` : "–";
  fillTable("video-link", [
    ["bit rate", mbit(v.kbps)],
    ["frames", `${num(v.fps, 0)} fps`],
    ["quality · size", `q${v.quality} · ${v.width}×${v.height} (tier ${v.tier})`],
    ["goodput (vehicle's estimate)", mbit(v.goodput_kbps)],
    ["frame age", finite(v.frame_age_ms) ? `${num(v.frame_age_ms, 0)} ms` : "–"],
    ["viewers on the vehicle", link && Array.isArray(link.viewers) ? link.viewers.length : "–"],
  ]);
  stats.videoLink = v;
  $("link-slow").classList.toggle("hidden", !v.reduced);
}

// state.actuator: the steering/throttle outputs of a real car. Older vehicles send none.
function showOutputs(a) {
  const el = $("outputs");
  if (!a || !a.backend) { el.textContent = "Outputs: –"; el.className = "outputs muted"; return; }
  const speed = a.speed_source ? ` · speed from ${a.speed_source}` : "";
  if (a.backend === "none") {
    el.textContent = `Outputs: none${speed}`;
    el.className = "outputs muted";
    return;
  }
  const us = (v) => (finite(v) ? `${v} µs` : "–");
  const board = a.board ? ` · board ${a.board}` : "";
  const fault = a.fault ? ` · FAULT: ${a.fault}` : "";
  el.textContent = `Outputs: ${a.backend} · ${a.state} · steering ${us(a.steering_us)} · throttle ${us(a.throttle_us)}${board}${fault}${speed}`;
  el.className = "outputs" + (a.fault ? " fault" : "");
}

function fillTable(id, rows) {
  const table = $(id);
  while (table.rows.length > rows.length) table.deleteRow(-1);
  rows.forEach(([k, v], i) => {
    const row = table.rows[i] || table.insertRow();
    if (row.cells.length === 0) { row.insertCell(); row.insertCell(); }
    row.cells[0].textContent = k; row.cells[1].textContent = v;
  });
}

function showAck(o) {
  const el = $("last-ack");
  const reason = o.reason ? ` (${o.reason})` : "";
  el.textContent = `${o.command}: ${o.status}${reason} — ${o.detail}`;
  el.className = "ack " + o.status;
  if (o.status !== "sent") {
    stats.acks.push(o);
    addEvent(`${o.command}: ${o.status}${reason} — ${o.detail}`, o.status);
  }
}

function addEvent(text, cls) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (cls) li.className = cls;
  const list = $("events");
  list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
}

function send(command) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const request_id = "r" + (++requestCounter);
  ws.send(JSON.stringify({ type: "action", request_id, command }));
}
window.adsSend = send;

function plot(id, series, colors) {
  const c = $(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const now = history.length ? history[history.length - 1].t_ms : 0;
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const p of history) { const v = s(p); if (finite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
  if (lo === Infinity) return;
  if (hi - lo < 1e-3) { hi += 0.5; lo -= 0.5; }
  const x = (t) => c.width - (now - t) / HISTORY_MS * c.width;
  const y = (v) => c.height - 12 - (v - lo) / (hi - lo) * (c.height - 20);
  g.fillStyle = "#8a94a3"; g.font = "10px monospace"; g.textBaseline = "top";
  g.fillText(hi.toFixed(2), 2, 0); g.textBaseline = "bottom"; g.fillText(lo.toFixed(2), 2, c.height);
  series.forEach((s, i) => {
    g.strokeStyle = colors[i]; g.lineWidth = 1.5; g.beginPath();
    let started = false;
    for (const p of history) {
      const v = s(p);
      if (!finite(v)) { started = false; continue; }
      if (!started) { g.moveTo(x(p.t_ms), y(v)); started = true; } else g.lineTo(x(p.t_ms), y(v));
    }
    g.stroke();
  });
}

function plots() {
  plot("plot-speed", [(p) => p.speed_mps * 3.6], ["#2fbf71"]);
  plot("plot-steering", [(p) => p.steering_deg], ["#f0a030"]);
  plot("plot-offset", [(p) => p.offset_m, (p) => p.truth_offset_m], ["#ffdc00", "#00c8ff"]);
  plot("plot-latency", [(p) => p.latency_ms], ["#ff40a0"]);
}

$("btn-estop").onclick = sendEstop;
$("btn-pause").onclick = () => send({ type: "pause" });
$("btn-resume").onclick = () => send({ type: "resume" });
$("btn-reset").onclick = () => send({ type: "reset" });
$("btn-respawn").onclick = () => send({ type: "respawn", spawn_point: Number($("spawn-point").value) });
$("btn-speed").onclick = () => send({ type: "set_target_speed", mps: Number($("target-speed").value) });
// Operator presence (the dead-man): the vehicle hears heartbeats only while this page is
// visible and was used lately. A forgotten tab, a hidden one or a closed one stops them.
let lastInput = performance.now();
for (const kind of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
  document.addEventListener(kind, () => { lastInput = performance.now(); }, { passive: true, capture: true });
}
function reportPresence() {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const visible = document.visibilityState === "visible";
  ws.send(JSON.stringify({ type: "presence", visible, input_age_ms: Math.round(performance.now() - lastInput) }));
}
document.addEventListener("visibilitychange", reportPresence);
setInterval(reportPresence, 250);
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && e.target.tagName !== "INPUT") {
    e.preventDefault();
    sendEstop();
  }
});
for (const name of LAYERS) $("layer-" + name).onchange = draw;

setInterval(() => {
  if (unreported.length && ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: "painted", samples: unreported.splice(0, 40) }));
  }
}, 500);
setInterval(plots, 500);
refreshControls();
start();

// The Record button: an MCAP recording written on this laptop by the viewer
// (GET/POST /api/recording, docs/recording.md), with its file, size and duration.
let recording = false;
function withToken(path) {
  return path + (token ? "?token=" + encodeURIComponent(token) : "");
}
function showRecording(s) {
  recording = !!s.recording;
  const button = $("btn-record");
  button.textContent = recording ? "Stop recording" : "Record";
  button.classList.toggle("recording", recording);
  const c = s.current;
  const last = s.last;
  const mb = (bytes) => (bytes / 1e6).toFixed(1) + " MB";
  const secs = (ms) => Math.round(ms / 1000) + " s";
  let text = "not recording";
  if (c) text = "● " + c.path + " — " + mb(c.bytes) + ", " + secs(c.duration_ms);
  else if (last && last.ok) {
    text = "saved " + last.recording.path + " — " + mb(last.recording.bytes) + ", " + secs(last.recording.duration_ms);
    // Stopped by a limit (size, duration, free space), not by the button: say which.
    if (last.stopped) text = "recording stopped: " + last.stopped + "; " + text;
  }
  else if (last && last.error) text = "recording stopped: " + last.error;
  $("record-status").textContent = text;
}
async function pollRecording() {
  try {
    const res = await fetch(withToken("/api/recording"));
    if (res.ok) showRecording(await res.json());
  } catch (err) {
    // The viewer is restarting: try again on the next tick.
  }
  setTimeout(pollRecording, 1000);
}
$("btn-record").onclick = async () => {
  const res = await fetch(withToken("/api/recording"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ record: !recording }),
  });
  const body = await res.json();
  if (res.ok) showRecording(body);
  else $("record-status").textContent = body.error || "recording request refused";
};
pollRecording();

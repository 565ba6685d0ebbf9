// The calibration page: one channel at a time, held only while its slider is held.
// While the pointer (or a key) is down on a slider, a calibrate_pulse goes every RENEW_MS with a
// lease of LEASE_MS; letting go sends calibrate_release. Nothing here keeps a pulse alive on its
// own: a closed tab, a hidden page or a lost link just stops the renewals, and the vehicle puts
// the channel back to neutral when the lease runs out.
"use strict";
const RENEW_MS = 100;
const LEASE_MS = 300;
const KEYS = ["steering_left_us", "steering_centre_us", "steering_right_us",
  "throttle_reverse_us", "throttle_neutral_us", "throttle_forward_us", "brake_us"];
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("adsToken") || "";
let ws = null;
let requestCounter = 0;
let held = null;            // "steering" | "throttle" | null
let renewTimer = null;
let vehicleValues = null;   // state.actuator.calibration
let initialised = false;
const found = {};           // key -> µs found here
const sentPulses = { steering: 0, throttle: 0 };

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : ""));
  ws.onopen = () => { $("link").textContent = "connected"; };
  ws.onmessage = (e) => { if (typeof e.data === "string") onMessage(JSON.parse(e.data)); };
  ws.onclose = () => {
    $("link").textContent = "offline"; $("link").className = "pill offline";
    release();
    setTimeout(connect, 1000);
  };
}

function send(command) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return null;
  const request_id = "c" + (++requestCounter);
  ws.send(JSON.stringify({ type: "action", request_id, command }));
  return request_id;
}

function onMessage(m) {
  switch (m.type) {
    case "hello":
      $("vehicle").textContent = m.vehicle || "no vehicle yet";
      setLink(m.link);
      break;
    case "link": setLink(m.status); break;
    case "state": showState(m.state); break;
    case "ack": showAck(m.outcome); break;
  }
}

function setLink(status) {
  $("link").textContent = status;
  $("link").className = "pill " + (status === "live" ? "live" : status === "lost" ? "lost" : "connecting");
  if (status !== "live") release();
}

function showState(s) {
  const a = s.actuator || {};
  const latched = s.commands && s.commands.estop_latched;
  $("status").textContent = `mode ${s.mode}${latched ? " · E-STOP LATCHED" : ""}` +
    (s.health && s.health.stop_reason ? ` · ${s.health.stop_reason}` : "");
  const us = (v) => (Number.isFinite(v) ? `${v} µs` : "–");
  const lease = a.calibrating ? ` · holding ${a.calibrating} (${a.lease_left_ms} ms left)` : "";
  $("outputs").textContent = `Outputs: ${a.backend || "–"} · ${a.state || "–"} · steering ${us(a.steering_us)} · ` +
    `throttle ${us(a.throttle_us)}${a.board ? " · board " + a.board : ""}${a.fault ? " · FAULT: " + a.fault : ""}${lease}`;
  if (!a.calibration) {
    $("status").textContent += " · this vehicle has no outputs to calibrate";
    return;
  }
  vehicleValues = a.calibration;
  const [lo, hi] = a.calibration_throttle_us || [a.calibration.throttle_neutral_us, a.calibration.throttle_neutral_us];
  $("throttle").min = lo; $("throttle").max = hi;
  $("throttle-range").textContent = `(this vehicle takes ${lo}..${hi} µs)`;
  if (!initialised) {
    initialised = true;
    setSlider("steering", a.calibration.steering_centre_us);
    setSlider("throttle", a.calibration.throttle_neutral_us);
  }
  showValues();
}

function setSlider(channel, value) {
  $(channel).value = value;
  $(channel + "-value").textContent = $(channel).value;
}

function showAck(o) {
  if (!o) return;
  // Renewals are many: only their refusals are news.
  if (o.command === "calibrate_pulse" && o.status === "accepted") return;
  $("last-ack").textContent = `${o.command}: ${o.status}${o.detail ? " — " + o.detail : ""}`;
  $("last-ack").className = "ack " + (o.status === "accepted" ? "" : "fault");
}

function showValues() {
  const body = $("values").tBodies[0];
  KEYS.forEach((k, i) => {
    const row = body.rows[i] || body.insertRow();
    while (row.cells.length < 3) row.insertCell();
    row.cells[0].textContent = k;
    row.cells[1].textContent = vehicleValues && vehicleValues[k] != null ? vehicleValues[k] : "–";
    row.cells[2].textContent = found[k] != null ? found[k] : "";
  });
  $("save").disabled = Object.keys(found).length === 0;
}

// Holding a channel: renew its lease while held; let go: release at once.
function hold(channel) {
  if (held === channel) return;
  release();
  held = channel;
  $(channel + "-held").textContent = "HELD";
  $(channel + "-held").className = "held";
  renew();
  renewTimer = setInterval(renew, RENEW_MS);
}

function renew() {
  if (!held) return;
  const us = Number($(held).value);
  sentPulses[held] += 1;
  send({ type: "calibrate_pulse", channel: held, us, lease_ms: LEASE_MS });
}

function release() {
  if (renewTimer) { clearInterval(renewTimer); renewTimer = null; }
  if (!held) return;
  $(held + "-held").textContent = "";
  held = null;
  send({ type: "calibrate_release" });
}

for (const channel of ["steering", "throttle"]) {
  const slider = $(channel);
  slider.addEventListener("pointerdown", (e) => {
    hold(channel);
    // The pointer's up comes to this slider even when it leaves it.
    try { slider.setPointerCapture(e.pointerId); } catch (_) { /* not an active pointer */ }
  });
  slider.addEventListener("input", () => {
    $(channel + "-value").textContent = slider.value;
    if (held === channel) renew();
  });
  // Arrow keys move the slider; the channel holds while a key is down.
  slider.addEventListener("keydown", () => hold(channel));
  slider.addEventListener("keyup", release);
}
for (const ev of ["pointerup", "pointercancel", "blur"]) window.addEventListener(ev, release);
document.addEventListener("visibilitychange", () => { if (document.hidden) release(); });

document.querySelectorAll("button[data-key]").forEach((b) => b.addEventListener("click", () => {
  found[b.dataset.key] = Number($(b.dataset.from).value);
  showValues();
}));
$("save").addEventListener("click", () => {
  const values = {};
  for (const k of KEYS) if (found[k] != null) values[k] = found[k];
  send({ type: "calibrate_save", values });
  $("last-ack").textContent = "calibrate_save: sent, waiting for the vehicle…";
});

showValues();
connect();

// Manual driving from the page (see viewer/src/teleop.rs and docs/protocol.md 5.8): one
// browser takes control; while a control is held it sends `drive` at 25 Hz over the
// websocket, each good for the viewer's lease (250 ms by default). Letting go sends one
// neutral command and then nothing: the vehicle brakes when the lease runs out, as it does
// when this tab closes or the link drops. Space stays the e-stop (app.js).
//
// Inputs, first that is active wins:
//   - a gamepad (browser Gamepad API, standard mapping): left stick steers, right trigger
//     throttle, left trigger brake, and LB (button 4) is the dead-man: nothing is sent
//     unless it is held;
//   - the on-screen joystick (touch or mouse): drag to steer (x) and drive (y);
//   - the keyboard: arrows or WASD, held to drive, ramped (steering ±1 in 0.4 s, throttle up
//     to the page's limit in 1 s), back to zero when released.
"use strict";

(function () {
  const SEND_EVERY_MS = 40;
  const STEER_RATE = 2.5;      // per second while a key is held
  const STEER_RETURN = 5.0;    // per second back to centre
  const THROTTLE_RATE = 1.0;
  const KEYS = {
    ArrowUp: "up", KeyW: "up", ArrowDown: "down", KeyS: "down",
    ArrowLeft: "left", KeyA: "left", ArrowRight: "right", KeyD: "right",
  };

  const D = window.adsDrive = {
    me: null, label: null, control: { client: null, label: null }, leaseMs: 250, state: null,
    // Commanded now (what this page sends) and counters, for the display and for tests.
    steering: 0, throttle: 0, source: "none", sent: 0, refused: 0, lastRefusal: "",
  };
  const held = new Set();
  let keySteer = 0, keyThrottle = 0;
  let stick = null;          // { x, y } while the on-screen joystick is held
  let wasActive = false;
  let lastTick = performance.now();

  const $ = (id) => document.getElementById(id);
  const clamp = (v) => Math.max(-1, Math.min(1, v));
  const inControl = () => D.me !== null && D.control && D.control.client === D.me;

  function send(message) {
    if (typeof ws === "undefined" || !ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  function maxThrottle() {
    const v = Number($("drive-max-throttle").value);
    return Number.isFinite(v) ? Math.max(0, Math.min(1, v)) : 0.5;
  }

  function pads() {
    return navigator.getGamepads ? Array.from(navigator.getGamepads()).filter(Boolean) : [];
  }

  // The active input: { steering, throttle, source } or null when nothing is held.
  function readInput(dt) {
    const pad = pads().find((p) => p && p.connected !== false);
    if (pad) {
      const b = (i) => (pad.buttons[i] ? (typeof pad.buttons[i] === "object" ? pad.buttons[i].value : pad.buttons[i]) : 0);
      const deadman = b(4) > 0.5;
      if (deadman) {
        const x = pad.axes[0] || 0;
        const steer = Math.abs(x) < 0.08 ? 0 : -x;   // stick left is negative; our + is left
        return { steering: clamp(steer), throttle: clamp(b(7) * maxThrottle() - b(6)), source: "gamepad" };
      }
    }
    if (stick) return { steering: clamp(-stick.x), throttle: clamp(stick.y > 0 ? stick.y * maxThrottle() : stick.y), source: "joystick" };
    const left = held.has("left"), right = held.has("right"), up = held.has("up"), down = held.has("down");
    const want = left === right ? 0 : (left ? 1 : -1);
    if (want !== 0) keySteer = clamp(keySteer + want * STEER_RATE * dt);
    else keySteer = Math.sign(keySteer) * Math.max(0, Math.abs(keySteer) - STEER_RETURN * dt);
    if (up && !down) keyThrottle = Math.min(maxThrottle(), Math.max(0, keyThrottle) + THROTTLE_RATE * dt);
    else if (down) keyThrottle = -1;
    else keyThrottle = 0;
    if (held.size === 0 && keySteer === 0) return null;
    return { steering: keySteer, throttle: keyThrottle, source: "keyboard" };
  }

  function tick(firstOfPress) {
    const now = performance.now();
    const dt = Math.min(0.1, (now - lastTick) / 1000);
    lastTick = now;
    const input = inControl() ? readInput(firstOfPress ? Math.max(dt, SEND_EVERY_MS / 1000) : dt) : null;
    if (input) {
      D.steering = input.steering; D.throttle = input.throttle; D.source = input.source;
      if (send({ type: "drive", steering: input.steering, throttle: input.throttle, t_ms: Date.now() })) D.sent++;
      wasActive = true;
    } else if (wasActive) {
      // Let go: one neutral command (never rate-limited away), then silence: the lease ends.
      D.steering = 0; D.throttle = 0; D.source = "none";
      send({ type: "drive", steering: 0, throttle: 0, t_ms: Date.now() });
      wasActive = false;
    }
    render();
  }
  setInterval(() => tick(false), SEND_EVERY_MS);

  document.addEventListener("keydown", (e) => {
    const key = KEYS[e.code];
    if (!key || e.target.tagName === "INPUT" || !inControl()) return;
    e.preventDefault();
    if (!held.has(key)) {
      held.add(key);
      tick(true);   // the first command goes at once, not at the next 40 ms tick
    }
  });
  document.addEventListener("keyup", (e) => {
    const key = KEYS[e.code];
    if (!key) return;
    held.delete(key);
    if (held.size === 0) { keySteer = 0; keyThrottle = 0; tick(false); }
  });
  // A tab that loses focus never gets the key-up: forget what was held.
  window.addEventListener("blur", () => { held.clear(); keySteer = 0; keyThrottle = 0; });

  // The on-screen joystick.
  const pad = $("joystick");
  function stickAt(e) {
    const r = pad.getBoundingClientRect();
    const x = ((e.clientX - r.left) / r.width) * 2 - 1;
    const y = -(((e.clientY - r.top) / r.height) * 2 - 1);
    stick = { x: clamp(x), y: clamp(y) };
    $("joystick-knob").style.left = ((stick.x + 1) * 50) + "%";
    $("joystick-knob").style.top = ((1 - stick.y) * 50) + "%";
  }
  pad.addEventListener("pointerdown", (e) => { pad.setPointerCapture(e.pointerId); stickAt(e); tick(true); });
  pad.addEventListener("pointermove", (e) => { if (stick) stickAt(e); });
  const letGo = () => { stick = null; $("joystick-knob").style.left = "50%"; $("joystick-knob").style.top = "50%"; };
  pad.addEventListener("pointerup", letGo);
  pad.addEventListener("pointercancel", letGo);

  $("btn-take-control").onclick = () => send({ type: "take_control" });
  $("btn-release-control").onclick = () => send({ type: "release_control" });
  for (const mode of ["autopilot", "manual", "assist"]) {
    $("btn-mode-" + mode).onclick = () => {
      // Choosing to drive by hand is taking control.
      if (mode !== "autopilot" && !inControl()) send({ type: "take_control" });
      window.adsSend({ type: "set_drive_mode", mode });
    };
  }

  D.onHello = (m) => { if (m.control) D.control = m.control; if (m.drive_lease_ms) D.leaseMs = m.drive_lease_ms; render(); };
  D.onYou = (m) => { D.me = m.client; D.label = m.label; render(); };
  D.onControl = (m) => { D.control = m.control || { client: null, label: null }; if (!inControl()) { held.clear(); stick = null; } render(); };
  D.onRefused = (m) => { D.refused++; D.lastRefusal = m.detail || ""; render(); };
  D.onState = (s) => { D.state = s; render(); };

  function bar(id, v) {
    const el = $(id);
    if (!el) return;
    const pct = Math.round(Math.abs(clamp(v || 0)) * 50);
    el.style.width = pct + "%";
    el.style.left = (v || 0) >= 0 ? "50%" : (50 - pct) + "%";
  }

  function render() {
    const t = (D.state && D.state.teleop) || {};
    const mine = inControl();
    const who = D.control && D.control.client !== null
      ? (mine ? "you drive" : `${D.control.label || "another browser"} drives`) : "nobody has control";
    $("drive-who").textContent = who;
    $("drive-who").className = "pill " + (mine ? "live" : (D.control && D.control.client !== null ? "connecting" : "lost"));
    const pilot = t.pilot || "autopilot";
    $("drive-mode").textContent = pilot.toUpperCase();
    $("drive-mode").className = "pill mode-" + pilot;
    for (const mode of ["autopilot", "manual", "assist"]) $("btn-mode-" + mode).classList.toggle("active", pilot === mode);
    $("btn-take-control").hidden = mine;
    $("btn-release-control").hidden = !mine;
    const n = (v, d) => (typeof v === "number" && Number.isFinite(v)) ? v.toFixed(d) : "–";
    const s = D.state || {};
    $("drive-hud").textContent =
      `${pilot}${t.live ? " · lease live" : ""} · ${who}\n` +
      `commanded  steer ${n(D.steering, 2)}  throttle ${n(D.throttle, 2)} (${D.source})\n` +
      `applied    steer ${n(t.steering, 2)}  throttle ${n(t.throttle, 2)}  age ${n(t.age_ms, 0)} ms\n` +
      `car        ${n((s.steering_rad || 0) * 180 / Math.PI, 1)}°  thr ${n(s.throttle, 2)}  brk ${n(s.brake, 2)}`;
    $("drive-hud").classList.toggle("hidden", pilot === "autopilot" && !mine);
    bar("bar-cmd-steer", -D.steering); bar("bar-cmd-throttle", D.throttle);
    bar("bar-app-steer", -(t.steering || 0)); bar("bar-app-throttle", t.live ? t.throttle : 0);
    $("drive-latency").textContent = (typeof t.latency_p50_ms === "number")
      ? `input → vehicle: p50 ${n(t.latency_p50_ms, 1)} ms · p99 ${n(t.latency_p99_ms, 1)} ms` : "input → vehicle: –";
    $("drive-counts").textContent = `sent ${D.sent} · taken ${t.taken || 0} · lapsed leases ${t.lapsed || 0}` +
      (D.refused ? ` · refused ${D.refused}: ${D.lastRefusal}` : "");
  }
  render();
})();

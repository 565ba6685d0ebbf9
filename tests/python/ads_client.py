#!/usr/bin/env python3
"""Conformance client of the ads wire protocol, written from docs/protocol.md alone.

Subscribes to every topic of a vehicle's PUB socket and opens a video session on its video
socket (a DEALER: hello every second, one credit per frame received, docs/protocol.md 2.1) for
--seconds, validates every envelope and body against the document, checks every frame's JPEG
(and that none comes on the PUB socket), and optionally sends one action
(after the first `state`) and waits for its `ack` event. Prints one JSON object on stdout:

    {"counts": {...}, "frames_ok": n, "frames_bad": n, "jpeg_sizes": [w, h] | null,
     "last_state": {...} | null, "ack": {...} | null, "errors": [...], ...}

Exit status 0 when at least one `frame` and one `state` arrived, nothing failed validation
(every frame valid) and, with --send, the action was acknowledged as accepted; 1 otherwise;
2 for bad arguments.

Sending (docs/protocol.md 5.4): the action socket is an XPUB connected at start-up; the action
is sent once, only after the vehicle's subscription has arrived on it (a message starting with
0x01), so it cannot be lost to the ZeroMQ slow-joiner problem and never needs a resend (the
vehicle would reject a resent id as a duplicate).

Requires Python 3.11, pyzmq and msgpack (tests/python/requirements.txt).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import stat
import json
import sys
import time
import uuid
from typing import Any

import msgpack
import zmq

PROTOCOL_VERSION = 2
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
KNOWN_TOPICS = ("frame", "detection", "state", "event", "truth")
# After this many distinct error texts, further ones are only counted.
MAX_DISTINCT_ERRORS = 50
# How long to wait for the ack after sending, and for the vehicle's subscription to the
# action socket after the first state, beyond --seconds if need be.
ACK_TIMEOUT_S = 5.0
SUBSCRIPTION_TIMEOUT_S = 3.0
EXPIRY_NS = 5_000_000_000
# Unanswered actions are sent again, same bytes, this often (docs/protocol.md 5.4).
RETRANSMIT_S = 0.5

# ---------------------------------------------------------------------------------------------
# Schemas (docs/protocol.md sections 3, 4, 6). A type is a string naming a scalar, a dict
# (a map with exactly these required keys; unknown keys are allowed), or a tuple:
# ("opt", T) T or nil, ("list", T) array of T, ("enum", values) str from values.

DRIVE_MODES = ("driving", "paused", "emergency_stop", "failsafe", "stopped")
CONTROL_SOURCES = ("detections", "truth")
REJECT_REASONS = ("malformed", "unknown", "expired", "duplicate", "not_allowed", "version", "unauthenticated", "bad_mac")
NOTICE_LEVELS = ("info", "warning", "error")
UINT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}

ENVELOPE = {"v": "u16", "vehicle": "str", "seq": "u64", "capture_ns": "u64", "send_ns": "u64"}

FRAME_INFO = {
    "frame_id": "u64",
    "width": "u32",
    "height": "u32",
    "quality": "u8",
    "encode_us": "u32",
    "tier": "u8",
    "goodput_kbps": "u32",
    "reduced": "bool",
}
VIEWER_LINK = {
    "session": "u64",
    "goodput_kbps": "u32",
    "sent_kbps": "u32",
    "fps": "f32",
    "tier": "u8",
    "width": "u32",
    "height": "u32",
    "quality": "u8",
    "in_flight": "u8",
    "delivery_ms": "f32",
    "frames_sent": "u64",
    "frames_skipped": "u64",
    "credits_ignored": "u64",
    "reduced": "bool",
}

LANE_XS = ("list", ("opt", "f32"))
LANE_DETECTION = {
    "h_samples": ("list", "u32"),
    "left": LANE_XS,
    "right": LANE_XS,
    "left_confidence": "f32",
    "right_confidence": "f32",
    "lateral_offset_m": "f32",
    "heading_error_rad": "f32",
    "curvature_radius_m": ("opt", "f32"),
}
DETECTED_OBJECT = {
    "class": "str",
    "class_id": "u16",
    "score": "f32",
    "x_px": "f32",
    "y_px": "f32",
    "w_px": "f32",
    "h_px": "f32",
}
DETECTIONS = {
    "frame_id": "u64",
    "capture_ns": "u64",
    "detector": "str",
    "processing_us": "u32",
    "lanes": ("opt", LANE_DETECTION),
    "objects": ("list", DETECTED_OBJECT),
}
VEHICLE_STATE = {
    "frame_id": "u64",
    "pose": {"x_m": "f64", "y_m": "f64", "yaw_rad": "f64"},
    "speed_mps": "f64",
    "target_speed_mps": "f64",
    "steering_rad": "f64",
    "throttle": "f64",
    "brake": "f64",
    "mode": ("enum", DRIVE_MODES),
    "paused": "bool",
    "control": ("enum", CONTROL_SOURCES),
    "source": "str",
    "fps": "f32",
    "timings": {"source_us": "u32", "control_us": "u32", "encode_us": "u32", "detection_latency_us": "u32"},
    "drops": {
        "frames_not_broadcast": "u64",
        "frames_overrun": "u64",
        "messages_dropped": "u64",
        "actions_rejected": "u64",
        "actions_unauthenticated": "u64",
        "actions_replayed": "u64",
    },
    "health": {"detections_fresh": "bool", "detection_age_ms": ("opt", "u32"), "stop_reason": ("opt", "str")},
    "commands": {
        "run_id": "str",
        "run_ns": "u64",
        "estop_latched": "bool",
        "held": "bool",
        "operator_required": "bool",
        "operator_heartbeat_age_ms": ("opt", "u32"),
    },
    "link": {"video_port": "u16", "encodes_per_s": "f32", "viewers": ("list", VIEWER_LINK)},
}
ACK = {
    "action_id": "str",
    "sender": "str",
    "seq": "u64",
    "accepted": "bool",
    "reason": ("opt", ("enum", REJECT_REASONS)),
    "detail": "str",
}
NOTICE = {"level": ("enum", NOTICE_LEVELS), "text": "str"}
EVENTS = {"ack": ACK, "notice": NOTICE}
LANE_TRUTH = {
    "frame_id": "u64",
    "h_samples": ("list", "u32"),
    "lanes": ("list", LANE_XS),
    "ego_left": ("opt", "u32"),
    "ego_right": ("opt", "u32"),
}
BODIES = {"frame": FRAME_INFO, "detection": DETECTIONS, "state": VEHICLE_STATE, "truth": LANE_TRUTH}


def type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def check(value: Any, schema: Any, path: str) -> list[str]:
    """Problems of `value` against `schema`, each naming its path; empty when it conforms."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected a map, got {type_name(value)}"]
        problems = []
        for key, sub in schema.items():
            if key not in value:
                problems.append(f"{path}.{key}: missing")
            else:
                problems.extend(check(value[key], sub, f"{path}.{key}"))
        return problems
    if isinstance(schema, tuple):
        kind, inner = schema
        if kind == "opt":
            return [] if value is None else check(value, inner, path)
        if kind == "list":
            if not isinstance(value, list):
                return [f"{path}: expected an array, got {type_name(value)}"]
            problems = []
            for i, item in enumerate(value):
                problems.extend(check(item, inner, f"{path}[{i}]"))
                if len(problems) > 5:
                    break
            return problems
        if kind == "enum":
            if not isinstance(value, str):
                return [f"{path}: expected a str enum value, got {type_name(value)} {value!r:.60}"]
            return [] if value in inner else [f"{path}: {value!r:.60} is not one of {list(inner)}"]
        raise ValueError(f"bad schema {schema!r}")
    if schema in UINT_BITS:
        # bool is an int subclass in Python; msgpack true/false is not an integer.
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected an unsigned integer, got {type_name(value)} {value!r:.60}"]
        if not 0 <= value < 1 << UINT_BITS[schema]:
            return [f"{path}: {value} out of range for {schema}"]
        return []
    if schema in ("f32", "f64"):
        # The vehicle always writes floats as msgpack float32/float64 (docs 3).
        return [] if isinstance(value, float) else [f"{path}: expected a float, got {type_name(value)} {value!r:.60}"]
    if schema == "bool":
        return [] if isinstance(value, bool) else [f"{path}: expected a bool, got {type_name(value)}"]
    if schema == "str":
        return [] if isinstance(value, str) else [f"{path}: expected a str, got {type_name(value)}"]
    raise ValueError(f"bad schema {schema!r}")


def check_body(topic: str, body: Any) -> list[str]:
    if topic == "event":
        if not isinstance(body, dict):
            return [f"event.body: expected a map, got {type_name(body)}"]
        kind = body.get("type")
        if kind not in EVENTS:
            return [f"event.body.type: {kind!r:.60} is not one of {list(EVENTS)}"]
        problems = check(body, EVENTS[kind], f"event.body({kind})")
        if kind == "ack" and isinstance(body.get("accepted"), bool):
            if body["accepted"] and body.get("reason") is not None:
                problems.append(f"event.body(ack): accepted but reason is {body['reason']!r}")
            if not body["accepted"] and body.get("reason") is None:
                problems.append("event.body(ack): rejected without a reason")
        return problems
    return check(body, BODIES[topic], f"{topic}.body")


# ---------------------------------------------------------------------------------------------
# JPEG

# Start-of-frame markers: SOF0 baseline, SOF1 extended, SOF2 progressive, SOF3 lossless and
# the arithmetic-coded ones. C4 (DHT), C8 (JPG) and CC (DAC) are not SOFs.
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field.
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first SOF segment; ValueError says what is wrong."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise ValueError("does not start with FF D8 (SOI)")
    if data[-2:] != b"\xff\xd9":
        raise ValueError("does not end with FF D9 (EOI)")
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at byte {pos}, found {data[pos]:#04x}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker in STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # EOI, or SOS: entropy-coded data follows, no SOF seen
            break
        if pos + 2 > len(data):
            raise ValueError(f"truncated segment {marker:#04x}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise ValueError(f"segment {marker:#04x} at byte {pos - 2} has bad length {length}")
        if marker in SOF_MARKERS:
            if length < 8:
                raise ValueError(f"SOF segment too short ({length})")
            height = int.from_bytes(data[pos + 3 : pos + 5], "big")
            width = int.from_bytes(data[pos + 5 : pos + 7], "big")
            return width, height
        pos += length
    raise ValueError("no SOF marker before the scan")


# ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts: dict[str, int] = {}
        self.frames_ok = 0
        self.frames_bad = 0
        self.jpeg_sizes: list[int] | None = None
        self.last_state: dict[str, Any] | None = None
        self.vehicle: str | None = None
        self.last_seq: dict[str, int] = {}
        self.seq_gaps: dict[str, int] = {}
        self.notices: list[dict[str, Any]] = []
        self.errors: dict[str, int] = {}
        self.ack: dict[str, Any] | None = None
        self.action: dict[str, Any] | None = None  # what was sent
        self.key = load_key(args.action_key) if args.action_key else None
        self.sent_at = 0.0
        self.last_sent_at = 0.0
        self.parts: list[bytes] = []
        self.vehicle_run: tuple[str, int, float] | None = None
        self.subscribed = False
        self.video = None  # the DEALER on the video socket, once run() opened it
        self.video_seq = 0

    def error(self, text: str) -> None:
        if text in self.errors or len(self.errors) < MAX_DISTINCT_ERRORS:
            self.errors[text] = self.errors.get(text, 0) + 1
        else:
            self.errors["(more distinct errors not shown)"] = self.errors.get("(more distinct errors not shown)", 0) + 1

    # -- receiving --

    def on_message(self, parts: list[bytes]) -> None:
        try:
            topic = parts[0].decode("utf-8")
        except UnicodeDecodeError:
            self.error(f"topic {parts[0][:40]!r} is not UTF-8")
            return
        self.counts[topic] = self.counts.get(topic, 0) + 1
        if topic not in KNOWN_TOPICS:
            return  # docs 8: unknown topics are ignored
        want_parts = 3 if topic == "frame" else 2
        if len(parts) != want_parts:
            self.error(f"{topic}: {len(parts)} parts, expected {want_parts}")
            if topic == "frame":
                self.frames_bad += 1
            return
        envelope = parts[1]
        if len(envelope) > MAX_ENVELOPE_BYTES:
            self.error(f"{topic}: envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE_BYTES}")
        try:
            env = msgpack.unpackb(envelope, raw=False)
        except Exception as e:  # msgpack raises several types for bad input
            self.error(f"{topic}: envelope is not one msgpack value: {type(e).__name__} {e}")
            if topic == "frame":
                self.frames_bad += 1
            return
        problems = check(env, ENVELOPE, f"{topic}.envelope")
        if isinstance(env, dict) and env.get("v") != PROTOCOL_VERSION:
            problems.append(f"{topic}.envelope.v: {env.get('v')!r}, expected {PROTOCOL_VERSION}")
        if isinstance(env, dict) and "body" not in env:
            problems.append(f"{topic}.envelope.body: missing")
        if problems:
            for p in problems:
                self.error(p)
            if topic == "frame":
                self.frames_bad += 1
            return
        body = env["body"]
        body_problems = check_body(topic, body)
        for p in body_problems:
            self.error(p)
        self.track_seq(topic, env["seq"])
        if self.vehicle is None:
            self.vehicle = env["vehicle"]
        elif env["vehicle"] != self.vehicle:
            self.error(f"{topic}: messages from two vehicles ({self.vehicle!r}, {env['vehicle']!r})")

        if topic == "frame":
            self.on_frame(body, parts[2], valid=not body_problems)
            self.send_credit(body, len(parts[2]))
        elif body_problems:
            return
        elif topic == "state":
            self.last_state = {k: body[k] for k in ("mode", "paused", "speed_mps", "frame_id")}
            # The run to address actions to, and its clock (docs/protocol.md 5.2).
            self.vehicle_run = (body["commands"]["run_id"], body["commands"]["run_ns"], time.monotonic())
        elif topic == "event":
            self.on_event(body)

    def track_seq(self, topic: str, seq: int) -> None:
        last = self.last_seq.get(topic)
        if last is not None:
            if seq <= last:
                self.error(f"{topic}: envelope seq went from {last} to {seq}")
            elif seq > last + 1:
                self.seq_gaps[topic] = self.seq_gaps.get(topic, 0) + (seq - last - 1)
        self.last_seq[topic] = seq

    def on_frame(self, info: dict[str, Any], payload: bytes, valid: bool) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            self.error(f"frame: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
            valid = False
        try:
            width, height = jpeg_size(payload)
        except ValueError as e:
            frame_id = info.get("frame_id") if isinstance(info, dict) else None
            self.error(f"frame {frame_id}: JPEG {e}")
            self.frames_bad += 1
            return
        if valid and (width, height) != (info["width"], info["height"]):
            self.error(
                f"frame {info['frame_id']}: JPEG is {width}x{height}, envelope says {info['width']}x{info['height']}"
            )
            valid = False
        if valid:
            self.frames_ok += 1
            self.jpeg_sizes = [width, height]
        else:
            self.frames_bad += 1

    # -- the video session (docs/protocol.md 2.1) --

    def send_video(self, topic: bytes, body: dict[str, Any]) -> None:
        self.video_seq += 1
        now = time.time_ns()
        env = {"v": PROTOCOL_VERSION, "vehicle": "*", "seq": self.video_seq, "capture_ns": now, "send_ns": now, "body": body}
        self.video.send_multipart([topic, msgpack.packb(env, use_bin_type=True)])

    def send_credit(self, info: Any, size: int) -> None:
        if self.video is None or not isinstance(info, dict) or not isinstance(info.get("frame_id"), int):
            return
        self.send_video(b"credit", {"frame_id": info["frame_id"], "bytes": size})

    def on_event(self, body: dict[str, Any]) -> None:
        if body["type"] == "notice":
            if len(self.notices) < 10:
                self.notices.append({"level": body["level"], "text": body["text"]})
            return
        if self.action is None or body["action_id"] != self.action["body"]["id"]:
            return  # someone else's action
        if self.ack is not None:
            # A retransmission is answered with the original outcome; a different one is a bug.
            if (body["accepted"], body["reason"]) != (self.ack["accepted"], self.ack["reason"]):
                self.error(f"a second, different ack for action {body['action_id']}")
            return
        self.ack = dict(body, rtt_ms=round((time.monotonic() - self.sent_at) * 1000, 3))
        if body["sender"] != self.action["body"]["sender"] or body["seq"] != self.action["seq"]:
            self.error(f"ack echoes sender {body['sender']!r} seq {body['seq']}, sent {self.action['body']['sender']!r} seq {self.action['seq']}")
        if not body["accepted"]:
            self.error(f"action rejected: {body['reason']} ({body['detail']})")

    # -- sending --

    def build_action(self) -> dict[str, Any]:
        name, _, value = self.args.send.partition("=")
        command: dict[str, Any] = {"type": name}
        if name == "set_target_speed":
            command["mps"] = float(value)
        elif name == "respawn" and value:
            command["spawn_point"] = int(value)
        now = time.time_ns()
        assert self.vehicle_run is not None, "a state names the run first"
        run_id, run_ns, seen = self.vehicle_run
        # Expiry on the vehicle's run clock: its run_ns plus the time since that state.
        expires_run_ns = run_ns + int((time.monotonic() - seen) * 1e9) + EXPIRY_NS
        return {
            "v": PROTOCOL_VERSION,
            "vehicle": self.vehicle,
            "seq": self.args.seq,
            "capture_ns": now,
            "send_ns": now,
            "body": {
                "id": str(uuid.uuid4()),
                "sender": self.args.sender,
                "command": command,
                "run": {"run_id": run_id, "expires_run_ns": expires_run_ns},
            },
        }

    def run(self) -> int:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.args.pub)
        # Frames come on their own socket: hello, then a credit per frame (docs/protocol.md 2.1).
        self.video = ctx.socket(zmq.DEALER)
        self.video.setsockopt(zmq.LINGER, 0)
        self.video.connect(self.args.video)
        last_hello = 0.0
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(self.video, zmq.POLLIN)
        xpub = None
        if self.args.send:
            # XPUB, not PUB: it hands us the vehicle's subscription, so we know when a send
            # will be delivered (docs/protocol.md 5.4).
            xpub = ctx.socket(zmq.XPUB)
            xpub.setsockopt(zmq.LINGER, 1000)
            xpub.connect(self.args.actions)
            poller.register(xpub, zmq.POLLIN)

        start = time.monotonic()
        deadline = start + self.args.seconds
        first_state_at: float | None = None
        gave_up_sending = False
        while True:
            now = time.monotonic()
            # With --send, stay past --seconds until the action is acked or has timed out.
            end = deadline
            if xpub is not None and not gave_up_sending and self.ack is None:
                if self.action is not None:
                    end = max(end, self.sent_at + ACK_TIMEOUT_S)
                elif first_state_at is not None:
                    end = max(end, first_state_at + SUBSCRIPTION_TIMEOUT_S)
            if now >= end:
                break
            if now - last_hello >= 1.0:  # also keeps the session alive
                last_hello = now
                self.send_video(b"hello", {"codec": "jpeg", "max_kbps": None})
            # Send once there is a state (for the vehicle id), a frame (a pause would stop them,
            # and this client checks that frames flow) and a subscription.
            ready = self.vehicle_run is not None and (self.frames_ok + self.frames_bad) > 0
            if xpub is not None and self.action is None and not gave_up_sending and ready:
                if first_state_at is None:
                    first_state_at = now
                if self.subscribed:
                    self.action = self.build_action()
                    self.sent_at = time.monotonic()
                    envelope = msgpack.packb(self.action, use_bin_type=True)
                    parts = [b"action", envelope]
                    if self.key is not None:
                        # docs/protocol.md 5.5: HMAC-SHA256 of the exact envelope bytes.
                        parts.append(hmac.new(self.key, envelope, hashlib.sha256).digest())
                    self.parts = parts
                    self.last_sent_at = time.monotonic()
                    xpub.send_multipart(parts)
                elif now - first_state_at >= SUBSCRIPTION_TIMEOUT_S:
                    self.error(f"the vehicle never subscribed on {self.args.actions}; action not sent")
                    gave_up_sending = True
            # Until acknowledged: the same bytes again (same id and seq), which the vehicle
            # answers with the original outcome and never carries out twice.
            if self.action is not None and self.ack is None and now - self.last_sent_at >= RETRANSMIT_S:
                self.last_sent_at = now
                xpub.send_multipart(self.parts)
            events = dict(poller.poll(timeout=max(1, min(100, int((end - now) * 1000)))))
            if xpub is not None and xpub in events:
                message = xpub.recv()
                if message[:1] == b"\x01":
                    self.subscribed = True
            for socket in (self.video, sub):
                if socket not in events:
                    continue
                # Drain what is queued before looking at the clock again.
                for _ in range(1000):
                    try:
                        parts = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if socket is sub and parts[:1] == [b"frame"]:
                        self.error("a frame on the PUB socket (frames belong to the video socket)")
                    self.on_message(parts)

        if xpub is not None:
            if self.last_state is None:
                self.error("no valid state received; action not sent")
            elif self.action is None and not gave_up_sending:
                self.error(f"the vehicle never subscribed on {self.args.actions}; action not sent")
            elif self.action is not None and self.ack is None:
                self.error(f"no ack for action {self.action['body']['id']} within {ACK_TIMEOUT_S} s")
            xpub.close()
        sub.close()
        self.video.close()
        ctx.term()

        for topic in ("frame", "state"):
            if not self.counts.get(topic):
                self.error(f"no {topic} received in {self.args.seconds} s")
        self.print_summary()
        ok = (
            self.counts.get("frame", 0) > 0
            and self.counts.get("state", 0) > 0
            and self.frames_bad == 0
            and not self.errors
            and (not self.args.send or (self.ack is not None and self.ack["accepted"]))
        )
        return 0 if ok else 1

    def print_summary(self) -> None:
        summary = {
            "counts": self.counts,
            "frames_ok": self.frames_ok,
            "frames_bad": self.frames_bad,
            "jpeg_sizes": self.jpeg_sizes,
            "last_state": self.last_state,
            "ack": self.ack,
            "errors": [text if n == 1 else f"{text} (x{n})" for text, n in self.errors.items()],
            "vehicle": self.vehicle,
            "seq_gaps": self.seq_gaps,
            "notices": self.notices,
            "sent": self.action,
        }
        print(json.dumps(summary))


def load_key(path: str) -> bytes:
    """The action key from its file, refusing one that group or others may access."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise SystemExit(f"action key {path} has mode {mode:o}; run chmod 600 {path}")
    key = bytes.fromhex(open(path, encoding="ascii").read().strip())
    if len(key) != 32:
        raise SystemExit(f"action key {path} holds {len(key)} bytes, expected 32")
    return key


def parse_send(value: str) -> str:
    name, eq, arg = value.partition("=")
    if name in ("pause", "resume", "emergency_stop", "reset") and not eq:
        return value
    if name == "respawn":
        if eq and not arg.isdigit():
            raise argparse.ArgumentTypeError("respawn=N needs a spawn point number")
        return value
    if name == "set_target_speed" and eq:
        try:
            mps = float(arg)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a speed: {arg!r}") from None
        if not 0.0 <= mps <= 40.0:
            raise argparse.ArgumentTypeError("set_target_speed takes 0..=40 m/s")
        return value
    raise argparse.ArgumentTypeError(
        "expected pause, resume, emergency_stop, reset, respawn[=N] or set_target_speed=MPS"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pub", default="tcp://127.0.0.1:5557", help="the vehicle's PUB endpoint")
    parser.add_argument("--actions", default="tcp://127.0.0.1:5558", help="the vehicle's action (SUB) endpoint")
    parser.add_argument("--video", default="tcp://127.0.0.1:5559", help="the vehicle's video (ROUTER) endpoint")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to listen")
    parser.add_argument(
        "--send",
        type=parse_send,
        help="action to send after the first state: pause | resume | emergency_stop | reset | respawn[=N] | set_target_speed=MPS",
    )
    parser.add_argument(
        "--sender",
        default=f"python-client#{uuid.uuid4().hex[:8]}",
        help="the action's sender (at most 64 bytes); the default is unique per run, so seq may "
        "start at 1 every time (docs/protocol.md 5.2)",
    )
    parser.add_argument("--seq", type=int, default=1, help="the action envelope's seq")
    parser.add_argument(
        "--action-key",
        help="key file (64 hex digits, mode 600) to sign the action with (docs/protocol.md 5.5)",
    )
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if not 0 <= args.seq < 1 << 64:
        parser.error("--seq must fit in u64")
    return Client(args).run()


if __name__ == "__main__":
    sys.exit(main())

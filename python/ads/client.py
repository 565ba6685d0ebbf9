"""The vehicle's ZeroMQ topics from Python (needs pyzmq: ``pip install ads[client]``).

Decoding, encoding and signing are ``ads-protocol``'s (via ``ads._native``); this module only
owns the sockets. See docs/protocol.md for every topic and field.

>>> with VehicleClient("tcp://car:5557", key_file="action.key") as car:  # doctest: +SKIP
...     state = car.recv(topics=("state",))
...     ack = car.send({"type": "pause"})
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Sequence

import zmq

from . import _native

ProtocolError = _native.ProtocolError


@dataclass(frozen=True)
class WireMessage:
    """One decoded message: the envelope's fields, the body as a dict, and for ``frame``
    the JPEG bytes."""

    topic: str
    vehicle: str
    seq: int
    capture_ns: int
    send_ns: int
    body: Dict[str, Any]
    payload: Optional[bytes]


def decode(parts: Sequence[bytes]) -> WireMessage:
    """Decodes one multipart message; ProtocolError says what is wrong with a bad one."""
    topic, vehicle, seq, capture_ns, send_ns, body, payload = _native.decode(list(parts))
    return WireMessage(topic, vehicle, seq, capture_ns, send_ns, json.loads(body), payload)


class ActionKey:
    """The shared action key, from a key file readable by its owner only (docs/security.md)."""

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        self._native = _native.ActionKey(os.fspath(path))


def encode_action(
    vehicle: str, seq: int, command: Dict[str, Any], *, sender: str, run_id: str, expires_run_ns: int,
    action_id: Optional[str] = None, key: Optional[ActionKey] = None,
) -> Sequence[bytes]:
    """The multipart frames of an action (``command`` like ``{"type": "pause"}``), signed
    with ``key`` when given. ``run_id`` and ``expires_run_ns`` address the vehicle's current
    run and are judged on its run clock (``state.commands``; docs/protocol.md 5)."""
    now = _native.wall_ns()
    action = {
        "id": action_id or uuid.uuid4().hex,
        "sender": sender,
        "run": {"run_id": run_id, "expires_run_ns": expires_run_ns},
        "command": command,
    }
    return _native.encode_action(vehicle, seq, now, json.dumps(action), None if key is None else key._native)


class VehicleClient:
    """Subscribes to a vehicle's PUB socket and sends actions to its SUB socket.

    ``actions`` names the action endpoint; without it the client sends actions where the
    vehicle's states say (``state.commands.action_port`` on the host of ``pub``)."""

    def __init__(
        self, pub: str, actions: Optional[str] = None, *, vehicle: str = "", sender: Optional[str] = None,
        key_file: "Optional[os.PathLike[str] | str]" = None, topics: Iterable[str] = ("state", "event", "detection"),
    ) -> None:
        self._context = zmq.Context()
        self._sub = self._context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 100)
        for topic in topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for needed in ("event", "state"):
            if needed not in topics:
                self._sub.setsockopt(zmq.SUBSCRIBE, needed.encode())
        self._sub.connect(pub)
        self._pub_endpoint = pub
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, 100)
        self.actions: Optional[str] = actions
        if actions is not None:
            self._pub.connect(actions)
        self.vehicle = vehicle
        # A random instance in the sender: a restarted client is a new sender, so its
        # sequence numbers may start again from 1 whatever the wall clock says.
        self.sender = sender or f"python#{uuid.uuid4().hex[:12]}"
        self._key = None if key_file is None else ActionKey(key_file)
        self._seq = 0
        # (run_id, run_ns, monotonic time it was heard) from the newest state.
        self._run: Optional[tuple] = None

    def recv(self, timeout: Optional[float] = 1.0, topics: Optional[Iterable[str]] = None) -> Optional[WireMessage]:
        """The next decoded message (of ``topics``, if given) within ``timeout`` seconds."""
        wanted = None if topics is None else set(topics)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sub.poll(None if left is None else int(left * 1000)):
                return None
            message = decode(self._sub.recv_multipart())
            if message.topic == "state":
                commands = message.body.get("commands") or {}
                self._run = (commands.get("run_id", ""), int(commands.get("run_ns", 0)), time.monotonic())
                if self.actions is None:
                    video_port = int((message.body.get("link") or {}).get("video_port", 0))
                    _, self.actions = _native.discover_endpoints(
                        self._pub_endpoint, video_port, int(commands.get("action_port", 0))
                    )
                    self._pub.connect(self.actions)
            if wanted is None or message.topic in wanted:
                return message

    def send(self, command: Dict[str, Any], *, timeout: float = 2.0, retry_every: float = 0.2) -> Dict[str, Any]:
        """Sends an action and returns its acknowledgement (the ``ack`` event's body),
        retransmitting with the same id until it comes or ``timeout`` runs out (TimeoutError)."""
        deadline = time.monotonic() + timeout
        # The action names the vehicle's run, which only a state tells.
        while self._run is None:
            if time.monotonic() >= deadline:
                raise TimeoutError("no state from the vehicle: its run is unknown")
            self.recv(timeout=deadline - time.monotonic(), topics=("state",))
        run_id, run_ns, heard = self._run
        expires_run_ns = run_ns + int((time.monotonic() - heard + timeout) * 1e9)
        self._seq += 1
        action_id = uuid.uuid4().hex
        parts = encode_action(self.vehicle, self._seq, command, sender=self.sender, run_id=run_id,
                              expires_run_ns=expires_run_ns, action_id=action_id, key=self._key)
        while time.monotonic() < deadline:
            self._pub.send_multipart(parts)
            until = min(deadline, time.monotonic() + retry_every)
            while time.monotonic() < until:
                message = self.recv(timeout=until - time.monotonic(), topics=("event",))
                if message and message.body.get("type") == "ack" and message.body.get("action_id") == action_id:
                    return message.body
        raise TimeoutError(f"no acknowledgement of {command} within {timeout} s")

    def set_drive_mode(self, mode: str, *, timeout: float = 2.0) -> Dict[str, Any]:
        """``autopilot``, ``manual`` or ``assist`` (docs/protocol.md 5.8); this client becomes
        the driver in ``manual``/``assist``. Returns the acknowledgement."""
        return self.send({"type": "set_drive_mode", "mode": mode}, timeout=timeout)

    def drive(self, steering: float, throttle: float, *, lease_ms: int = 250) -> bool:
        """One teleop command (steering and throttle in -1..1, + steering = left, − throttle =
        brake), good for ``lease_ms`` (≤ 300) after it arrives: call it at 20–30 Hz while
        driving; stop calling and the car brakes. Never acknowledged, never retransmitted
        (the newest wins; ``state.teleop`` says what was taken). False before any state."""
        if self._run is None:
            return False
        run_id, run_ns, heard = self._run
        # Expires two leases ahead, so a command that sat in a queue gets no fresh lease.
        expires_run_ns = run_ns + int((time.monotonic() - heard) * 1e9) + 2 * lease_ms * 1_000_000
        self._seq += 1
        command = {"type": "drive", "steering": float(steering), "throttle": float(throttle),
                   "lease_ms": int(lease_ms), "issued_ns": _native.wall_ns()}
        self._pub.send_multipart(encode_action(self.vehicle, self._seq, command, sender=self.sender, run_id=run_id,
                                               expires_run_ns=expires_run_ns, key=self._key))
        return True

    def close(self) -> None:
        self._sub.close(0)
        self._pub.close(0)
        self._context.term()

    def __enter__(self) -> "VehicleClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

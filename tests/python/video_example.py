"""Watch a vehicle's video the bounded way (docs/protocol.md 2.1): one frame in flight.

Requires pyzmq and msgpack. Saves the newest frame to newest.jpg and prints one line per
second: frames, bit rate, size and quality, and the frame's age (capture -> here; the clocks
of vehicle and laptop must agree for that number, nothing else here needs them to).
"""
import sys
import time

import msgpack
import zmq

VIDEO = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5559"  # the vehicle's link.endpoint
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0


def send(sock, topic, body):
    now = time.time_ns()
    env = {"v": 2, "vehicle": "*", "seq": 0, "capture_ns": now, "send_ns": now, "body": body}
    sock.send_multipart([topic, msgpack.packb(env)])


video = zmq.Context().socket(zmq.DEALER)
video.setsockopt(zmq.LINGER, 0)
video.connect(VIDEO)
frames = bytes_in = 0
last_hello = last_print = 0.0
end = time.monotonic() + SECONDS
while time.monotonic() < end:
    now = time.monotonic()
    if now - last_hello >= 1.0:  # the hello opens the session and keeps it alive
        send(video, b"hello", {"codec": "jpeg", "max_kbps": None})
        last_hello = now
    if not video.poll(100):
        continue
    topic, envelope, jpeg = video.recv_multipart()
    env = msgpack.unpackb(envelope)
    info = env["body"]
    # The credit first: it is what lets the vehicle send the next frame.
    send(video, b"credit", {"frame_id": info["frame_id"], "bytes": len(jpeg)})
    frames += 1
    bytes_in += len(jpeg)
    with open("newest.jpg", "wb") as f:
        f.write(jpeg)
    if now - last_print >= 1.0:
        age_ms = (time.time_ns() - env["capture_ns"]) / 1e6
        print(f"{frames} frames, {bytes_in * 8 / 1e6:.2f} Mbit, {info['width']}x{info['height']} "
              f"q{info['quality']}, age {age_ms:.0f} ms{' (reduced)' if info['reduced'] else ''}",
              flush=True)
        frames = bytes_in = 0
        last_print = now

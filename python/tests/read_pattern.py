"""Reads frames of an `ads-ring write` pattern ring and checks every one it accepts.

Prints one JSON line when `--frames` frames were accepted (finish() True), then one more when
the writer goes away. A frame accepted whose bytes are not exactly the pattern of its id is
a torn frame that got through: the test's failure. Every tenth frame is read with
read_copy() instead, so both paths are checked.
"""

import argparse
import json
import sys
import time

import numpy as np

import ads

# tests/src/pattern.rs: word i of frame `id` is id*MIX ^ i*POS (wrapping u64), little-endian.
MIX = 0x9E3779B97F4A7C15
POS = 0xD6E8FEB86659FD93
MASK = (1 << 64) - 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ring", required=True)
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    args = p.parse_args()

    reader = ads.FrameReader.wait_for(args.ring, timeout=30, width=args.width, height=args.height)
    nbytes = reader.stride * reader.height
    assert nbytes % 8 == 0, "the check below compares whole 8-byte words"
    with np.errstate(over="ignore"):
        positions = np.arange(nbytes // 8, dtype=np.uint64) * np.uint64(POS)

    def is_pattern(pixels: np.ndarray, frame_id: int) -> bool:
        words = pixels.reshape(-1).view("<u8")
        return bool(np.array_equal(words, positions ^ np.uint64((frame_id * MIX) & MASK)))

    accepted = torn_accepted = discarded = torn_discarded = copies = 0
    started = time.monotonic()
    while accepted < args.frames:
        if accepted % 10 == 9:
            copied = reader.read_copy(timeout=10.0)
            assert copied is not None, "no frame for 10 s"
            copies += 1
            accepted += 1
            torn_accepted += not is_pattern(copied.pixels, copied.id)
            continue
        frame = reader.read(timeout=10.0)
        assert frame is not None, "no frame for 10 s"
        with frame:
            intact_bytes = is_pattern(frame.pixels, frame.id)
        if frame.valid:
            accepted += 1
            torn_accepted += not intact_bytes
        else:
            discarded += 1
            torn_discarded += not intact_bytes
    elapsed = time.monotonic() - started
    print(json.dumps({
        "event": "done", "accepted": accepted, "torn_accepted": torn_accepted, "copies": copies,
        "discarded": discarded, "torn_discarded": torn_discarded, "seconds": round(elapsed, 2),
        "stats": reader.stats(),
    }), flush=True)

    # Now the test stops the writer: reading must say so, with the ring's message.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            reader.read(timeout=0.5)
        except ads.WriterGone as gone:
            print(json.dumps({"event": "writer_gone", "message": str(gone)}), flush=True)
            return 0
    print(json.dumps({"event": "no_writer_gone"}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""An array from ``frame.pixels`` keeps its frame: the idiom ``px = reader.read().pixels``.

Run against a live `ads-ring write` pattern ring whose writer runs as fast as it can. Each
round takes ``px = reader.read().pixels`` (the temporary Frame is gone at once) and looks at
``px`` several times while the writer goes round the ring: every look must show one whole
frame (every 8-byte word the pattern of one frame id), and the same one each time. Prints one
JSON line; exit status 0 whatever it found (the test reads the counts).

Also checks, in the same run: an array taken inside a ``with`` block stays that frame after
the block; a view per access (reshaping one array does not change the next one); more live
arrays than the reader may pin is a clear error, not a torn array; and a frame read before
the writer closed stays viewable, intact, after it closed (``--after-close`` waits for that).
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
MIX_INV = pow(MIX, -1, 1 << 64)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ring", required=True)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--looks", type=int, default=5)
    args = p.parse_args()

    reader = ads.FrameReader.wait_for(args.ring, timeout=30)
    nbytes = reader.stride * reader.height
    with np.errstate(over="ignore"):
        positions = np.arange(nbytes // 8, dtype=np.uint64) * np.uint64(POS)

    def frame_of(px: np.ndarray):
        """The id whose pattern every word of px is, or None (a torn or foreign array)."""
        words = np.ascontiguousarray(px).reshape(-1).view("<u8")
        frame_id = (int(words[0]) * MIX_INV) & MASK
        ok = np.array_equal(words, positions ^ np.uint64((frame_id * MIX) & MASK))
        return frame_id if ok else None

    torn = changed = looks = 0
    ids = set()
    for _ in range(args.rounds):
        px = reader.read(timeout=10.0).pixels
        first = frame_of(px)
        for _ in range(args.looks):
            # Give the writer time to go round the ring a few times.
            time.sleep(0.002)
            now = frame_of(px)
            looks += 1
            torn += now is None
            changed += now != first
        ids.add(first)
        del px

    # Inside a `with` block, then kept after it.
    with reader.read(timeout=10.0) as frame:
        kept = frame.pixels
        kept_id = frame.id
    time.sleep(0.05)
    kept_after_with = frame_of(kept) == kept_id
    del kept

    # A view per access: reshaping one array does not reshape the next.
    frame = reader.read(timeout=10.0)
    a = frame.pixels
    a.shape = (-1,)
    view_per_access = frame.pixels.shape == reader.shape
    frame.finish()
    del a, frame

    # More live arrays than the reader may pin: a clear error, and nothing torn.
    held = []
    too_many = None
    for _ in range(getattr(reader, "max_pins", 2) + 1):
        try:
            held.append(reader.read(timeout=10.0).pixels)
        except ads.RingError as e:
            too_many = str(e)
            break
    held_intact = all(frame_of(px) is not None for px in held)
    del held

    # The writer closes (the test stops it once it sees this line); a frame read before
    # stays pinned and viewable, even by a reader that looks at its first pixels only after
    # the close.
    reader.close()
    late = ads.FrameReader(args.ring)
    last = late.read(timeout=10.0)
    print(json.dumps({"event": "holding", "id": last.id}), flush=True)
    deadline = time.monotonic() + 60
    gone = False
    while time.monotonic() < deadline and not gone:
        try:
            reader2 = ads.FrameReader(args.ring)
            reader2.close()
            time.sleep(0.05)
        except (ads.WriterGone, ads.RingNotFound):
            gone = True
    try:
        after_close = frame_of(last.pixels) == last.id and last.finish()
        after_close_error = None
    except Exception as e:  # noqa: BLE001 - reported to the test
        after_close, after_close_error = False, f"{type(e).__name__}: {e}"

    print(json.dumps({
        "event": "done", "rounds": args.rounds, "looks": looks, "torn": torn, "changed": changed,
        "distinct_frames": len(ids), "kept_after_with": kept_after_with,
        "view_per_access": view_per_access, "too_many": too_many, "held_intact": held_intact,
        "writer_gone_seen": gone, "after_close": after_close, "after_close_error": after_close_error,
        "stats": reader.stats(), "pinned_at_end": getattr(reader, "pinned", None),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Readers across fork(): closed in the child, a clear error there, the parent untouched.

Run against a live `ads-ring write` pattern ring whose writer runs as fast as it can. The
parent holds a frame (an array) while
- an ``os.fork()`` child tries the inherited reader (must raise ``ads.ForkedReader``, and
  the reader is closed there), lets the inherited frame and array go, then attaches a reader
  of its own and checks a frame;
- a ``multiprocessing`` worker started with fork does the same;
and after each, the parent's array must still be its frame, whole, and the parent's reader
must read on. Prints one JSON line.
"""

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import time

import numpy as np

import ads

MIX = 0x9E3779B97F4A7C15
POS = 0xD6E8FEB86659FD93
MASK = (1 << 64) - 1
MIX_INV = pow(MIX, -1, 1 << 64)

ring = ""
reader = None
inherited = None  # the frame the parent holds, as a child inherits it


def frame_of(px: np.ndarray):
    words = np.ascontiguousarray(px).reshape(-1).view("<u8")
    n = words.size
    with np.errstate(over="ignore"):
        positions = np.arange(n, dtype=np.uint64) * np.uint64(POS)
    frame_id = (int(words[0]) * MIX_INV) & MASK
    return frame_id if np.array_equal(words, positions ^ np.uint64((frame_id * MIX) & MASK)) else None


def in_child() -> dict:
    """What a forked child does with what it inherited; a dict of what happened."""
    global inherited
    out = {"closed": reader.closed}
    try:
        reader.read(timeout=1.0)
        out["read"] = "returned"
    except Exception as e:  # noqa: BLE001 - reported
        out["read"] = type(e).__name__
        out["message"] = str(e)
    # The inherited frame and array go (as a worker's would at exit); the parent's pin stays.
    inherited = None
    own = ads.FrameReader(ring)
    with own.read(timeout=10.0) as frame:
        out["own_reader_ok"] = frame_of(frame.pixels) == frame.id
    own.close()
    return out


def child_via_multiprocessing(_: int) -> dict:
    return in_child()


def main() -> int:
    global ring, reader, inherited
    p = argparse.ArgumentParser()
    p.add_argument("--ring", required=True)
    args = p.parse_args()
    ring = args.ring
    reader = ads.FrameReader.wait_for(ring, timeout=30)
    frame = reader.read(timeout=10.0)
    held_id = frame.id
    inherited = frame.pixels
    del frame
    report = {"event": "done"}

    # os.fork(): the child reports through a pipe.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = in_child()
        except Exception as e:  # noqa: BLE001 - reported
            result = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        report["os_fork"] = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    time.sleep(0.05)  # the writer goes round the ring many times meanwhile
    report["held_after_os_fork"] = frame_of(inherited) == held_id

    # multiprocessing with the fork start method (a DataLoader worker is one).
    with multiprocessing.get_context("fork").Pool(1) as pool:
        report["multiprocessing"] = pool.map(child_via_multiprocessing, [0])[0]
    time.sleep(0.05)
    report["held_after_multiprocessing"] = frame_of(inherited) == held_id
    report["parent_closed"] = reader.closed

    # The parent's reader reads on, frames whole.
    ok = 0
    for _ in range(50):
        with reader.read(timeout=10.0) as f:
            ok += frame_of(f.pixels) == f.id
    report["parent_reads_on"] = ok

    # Sent to another process (multiprocessing's spawn pickles it): a clear error.
    try:
        pickle.dumps(reader)
        report["pickled"] = "no error"
    except TypeError as e:
        report["pickled"] = str(e)
    report["stats"] = reader.stats()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

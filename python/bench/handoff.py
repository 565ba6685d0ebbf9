"""Frame hand-off into Python next to the Rust reader, in the same run.

One `ads-ring write` publishes 800x600 BGR frames; an `ads-ring read` (the Rust reader) and
this process read the same ring at the same time. Each reports publish -> frame in hand:
for Rust, `FrameReader::read` returned; for Python, `FrameReader.read()` returned and
`frame.pixels` (the numpy array) exists. The copy-out figures are `read_copy()` (publish ->
intact copy in hand) and the copy alone. Prints a Markdown table; never fails on speed.

    python python/bench/handoff.py --ads-ring target/debug/ads-ring [--seconds 5]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

import ads


def percentiles(ns: List[int]) -> Dict[str, float]:
    a = np.sort(np.asarray(ns, dtype=np.float64)) / 1000.0
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a[-1])}


def python_reader(name: str, seconds: float, spin: bool, copy: bool) -> Dict[str, Dict[str, float]]:
    reader = ads.FrameReader.wait_for(name, timeout=10)
    handoff, binding, copy_only = [], [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if copy:
            copied = reader.read_copy(timeout=1.0, spin=spin)
            now = ads.monotonic_ns()
            if copied is not None:
                handoff.append(now - copied.publish_mono_ns)
            continue
        frame = reader.read(timeout=1.0, spin=spin)
        if frame is None:
            continue
        pixels = frame.pixels
        now = ads.monotonic_ns()
        handoff.append(now - frame.publish_mono_ns)
        binding.append(now - frame.read_mono_ns)
        started = time.perf_counter_ns()
        pixels.copy()
        copy_only.append(time.perf_counter_ns() - started)
        frame.finish()
    reader.close()
    out = {"handoff": percentiles(handoff)}
    if binding:
        out["binding"] = percentiles(binding)
    if copy_only:
        out["copy"] = percentiles(copy_only)
    return out


def rust_reader(ads_ring: str, name: str, spin: bool, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [ads_ring, "read", "--name", name, "--wait", "spin" if spin else "block", "--mode", "latest",
         "--stats-ms", str(int(seconds * 1000) - 300)],
        stdout=subprocess.PIPE, text=True,
    )


def rust_summary(proc: subprocess.Popen) -> Dict[str, float]:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    stats = [json.loads(line) for line in out.splitlines() if '"stats"' in line]
    if not stats:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    latency = stats[-1]["latency"]
    return {"n": latency["count"], "p50": latency["p50_us"], "p99": latency["p99_us"], "max": latency["max_us"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ads-ring", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=200.0)
    args = p.parse_args()
    name = f"pybench{os.getpid()}"
    writer = subprocess.Popen([args.ads_ring, "write", "--name", name, "--fps", str(args.fps), "--slots", "4"],
                              stdout=subprocess.DEVNULL)
    rows = []
    cases = [("blocking", False, False), ("busy-poll", True, False), ("blocking, copy-out", False, True)]
    try:
        for label, spin, copy in cases:
            # Alone, one after the other: on a 2-core machine two readers woken by one publish
            # also queue for a core, which is not the hand-off's cost.
            rust = rust_reader(args.ads_ring, name, spin, args.seconds)
            time.sleep(args.seconds)
            rs = rust_summary(rust)
            py = python_reader(name, args.seconds, spin, copy)
            # And both on the ring at once.
            rust = rust_reader(args.ads_ring, name, spin, args.seconds)
            both_py = python_reader(name, args.seconds, spin, copy)
            both_rs = rust_summary(rust)
            rows.append((label, rs, py, both_rs, both_py))
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    f = lambda d: f"{d['p50']:.1f} / {d['p99']:.1f}"
    print(f"800x600 BGR frames at {args.fps:.0f} fps, {args.seconds:.0f} s per reader and case; publish -> frame in hand")
    print()
    print("| case | Rust alone p50 / p99 µs | Python alone p50 / p99 µs | Python ÷ Rust p50 | binding (read -> array) p50 / p99 µs "
          "| copy alone p50 / p99 µs | both at once: Rust / Python p50 µs |")
    print("|---|---|---|---|---|---|---|")
    for label, rs, py, both_rs, both_py in rows:
        h = py["handoff"]
        binding = f(py["binding"]) if "binding" in py else "-"
        copy_text = f(py["copy"]) if "copy" in py else "(included)"
        print(f"| {label} | {f(rs)} | {f(h)} | {h['p50'] / rs['p50']:.2f} | {binding} | {copy_text} | "
              f"{both_rs['p50']:.1f} / {both_py['handoff']['p50']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

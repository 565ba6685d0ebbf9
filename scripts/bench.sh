#!/usr/bin/env bash
# Latency of every hop of the pipeline, on this machine, in release mode:
# vehicle (simulator) → shared memory → detection → shared memory → control loop, and
# vehicle → ZeroMQ TCP → viewer → websocket → pixels painted in headless Chromium; plus
# CPU per process, drops, and the same frames over ZeroMQ TCP versus our ring.
#
#   scripts/bench.sh [--seconds 60] [--fps 30] [--browsers 1] [--no-zmq-compare]
#   scripts/bench.sh --soak [--seconds 600]        # memory growth, frame gaps, drift
#
# Prints a table; writes target/bench/pipeline.json and target/bench/pipeline.svg (soak.*
# for --soak). See docs/benchmarks.md for a recent result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib/build.sh
ads_build
exec "$(ads_bin_dir)/ads-bench" pipeline "$@"

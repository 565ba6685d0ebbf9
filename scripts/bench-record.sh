#!/usr/bin/env bash
# Recorder cost at 30 fps: ads-record's CPU and MB per minute, and the vehicle's CPU without
# and with a recorder attached, in the same vehicle run. A viewer watches throughout: the
# vehicle encodes JPEG only while someone subscribes, so "without" means "with a viewer only".
# Prints figures; never fails on speed.
#   scripts/bench-record.sh [SECONDS]      (binaries from ${CARGO_TARGET_DIR:-target}/debug)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
seconds="${1:-20}"
name="bench-rec-$$"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
pub="tcp://127.0.0.1:$(free_port)"

RUST_LOG=error "$bin/ads-vehicle" --control truth --vehicle-id "$name" --broadcast "$pub" \
  --actions "tcp://127.0.0.1:$(free_port)" --frames-ring "$name-f" --detections-ring "$name-d" >/dev/null &
vehicle=$!
RUST_LOG=error "$bin/ads-viewer" --vehicle "$pub" --actions "tcp://127.0.0.1:$(free_port)" --port "$(free_port)" >/dev/null 2>&1 &
viewer=$!
trap 'kill $vehicle $viewer ${recorder:-} 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 3

v0=$(cpu_ticks $vehicle); sleep "$seconds"; v1=$(cpu_ticks $vehicle)
pct() { awk -v d="$1" -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.1f", 100 * d / hz / s }'; }
alone=$(pct $((v1 - v0)))

RUST_LOG=error "$bin/ads-record" --vehicle "$pub" -o "$work/bench.mcap" --duration $((seconds + 6)) >/dev/null &
recorder=$!
sleep 3
v0=$(cpu_ticks $vehicle); r0=$(cpu_ticks $recorder); b0=$(stat -c %s "$work/bench.mcap")
sleep "$seconds"
v1=$(cpu_ticks $vehicle); r1=$(cpu_ticks $recorder); b1=$(stat -c %s "$work/bench.mcap")
with=$(pct $((v1 - v0)))
rec=$(pct $((r1 - r0)))
mb_min=$(awk -v b=$((b1 - b0)) -v s="$seconds" 'BEGIN { printf "%.1f", b * 60 / s / 1e6 }')
wait $recorder || true
recorder=
echo "vehicle CPU, a viewer only:     ${alone}% of one core (${seconds} s)"
echo "vehicle CPU, viewer + recorder: ${with}% of one core (same run)"
echo "ads-record CPU:                 ${rec}% of one core"
echo "recording size:                 ${mb_min} MB per minute at 30 fps"

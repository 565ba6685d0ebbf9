#!/usr/bin/env bash
# The video link over shaped links (docs/benchmarks.md "The link to the laptop"). By default
# the topology of a car on WiFi: a "car" and a "laptop" network namespace made here, joined by a
# veth pair, each end shaped by one tbf (one FIFO per direction, as a WiFi station's queue is),
# actions signed under a key made for the run. Cases: rates (one viewer), a step from 20 to
# 2 Mbit/s, `rogue` (12 squatting + 7 keyframe-flooding clients beside the operator) and
# `outage` (the link down for 10 s). With --loopback: the older topology, the vehicle and the
# viewers in one namespace, only the vehicle's traffic shaped with htb on `lo` (and the case
# `two`, two viewers on different links at once). Needs root (ip netns, tc). Prints a table;
# never fails on a number.
#
#   scripts/bench-link.sh [--loopback] [--seconds 10] [--warmup 3] [--cases 8,4,2,1,step,rogue,outage] [--codecs jpeg,h264] [--video FILE]
#
# Writes target/bench/link.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build.sh
ads_build
if [[ $EUID -ne 0 ]]; then
  echo "bench-link.sh needs root (it makes a network namespace and shapes it with tc)" >&2
  exit 2
fi
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "bench-link.sh needs $tool (iproute2)" >&2; exit 2; }
done
target_dir="${CARGO_TARGET_DIR:-target}"
loopback=0
if [[ ${1:-} == --loopback ]]; then
  loopback=1
  shift
fi
laptop="ads-link-$$"
car="ads-car-$$"
cleanup() {
  ip netns del "$laptop" 2>/dev/null || true
  ip netns del "$car" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$laptop"
if (( loopback )); then
  ip netns exec "$laptop" "$(ads_bin_dir)/ads-bench" link --in-private-netns \
    --json "$target_dir/bench/link.json" "$@"
else
  ip netns add "$car"
  ip netns exec "$laptop" "$(ads_bin_dir)/ads-bench" link --in-private-netns --car-netns "$car" \
    --json "$target_dir/bench/link.json" "$@"
fi

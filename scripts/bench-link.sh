#!/usr/bin/env bash
# The video link over shaped links (docs/benchmarks.md "The link to the laptop"): the vehicle
# and measuring viewers in a private network namespace made here, the vehicle's traffic shaped
# with htb on its loopback (20, 8, 4, 2, 1 Mbit/s, a step from 20 to 2 Mbit/s, two viewers on
# 20 and 2 Mbit/s at once). Needs root (ip netns, tc). Prints a table; never fails on a number.
#
#   scripts/bench-link.sh [--seconds 10] [--warmup 3] [--cases 20,8,4,2,1,step,two] [--codecs jpeg,h264] [--stingy]
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
ns="ads-link-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" "$(ads_bin_dir)/ads-bench" link --in-private-netns \
  --json "$target_dir/bench/link.json" "$@"

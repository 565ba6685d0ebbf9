#!/usr/bin/env bash
# Ring latency across two processes next to ZeroMQ ipc/tcp and iceoryx2; see docs/benchmarks.md.
# Options pass through, e.g. `scripts/bench-ring.sh --frames 20000 --only ring-block,iceoryx2-block`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib/build.sh
ads_build
exec "$(ads_bin_dir)/ads-ring" bench "$@"

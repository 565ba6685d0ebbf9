#!/usr/bin/env bash
# Frame hand-off into Python (FrameReader.read -> numpy array) next to the Rust reader on the
# same ring, and the copy-out cost; see docs/benchmarks.md. Options pass through to
# python/bench/handoff.py, e.g. `scripts/bench-python.sh --seconds 10 --fps 100`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(scripts/python-env.sh | tail -n1)
# The one build set of every script (scripts/lib/build.sh); ADS_PROFILE=dev spares a release
# build (the dev profile builds ads-tools and ads-shmem-ipc optimised, root Cargo.toml).
source scripts/lib/build.sh
ads_build
exec "$py" python/bench/handoff.py --ads-ring "$(ads_bin_dir)/ads-ring" "$@"

#!/usr/bin/env bash
# Frame hand-off into Python (FrameReader.read -> numpy array) next to the Rust reader on the
# same ring, and the copy-out cost; see docs/benchmarks.md. Options pass through to
# python/bench/handoff.py, e.g. `scripts/bench-python.sh --seconds 10 --fps 100`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(scripts/python-env.sh | tail -n1)
target="${CARGO_TARGET_DIR:-target}"
# The dev profile builds ads-tools and ads-shmem-ipc optimised (root Cargo.toml), and spares a
# release build of everything ads-ring links (iceoryx2, libzmq).
cargo build --locked -p ads-tools --bin ads-ring
exec "$py" python/bench/handoff.py --ads-ring "$target/debug/ads-ring" "$@"

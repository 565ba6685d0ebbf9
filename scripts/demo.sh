#!/usr/bin/env bash
# The main job. For now: the shared-memory ring demo, a writer and a reader in two
# processes printing live throughput and hand-off latency. Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked -p ads-tests --bin ads-ring
exec target/release/ads-ring demo "$@"

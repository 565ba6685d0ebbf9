#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time (default 60 s each).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: decode action_gate ring_header h264_decode
#
# Needs the nightly toolchain and cargo-fuzz (installed here if missing). Not part of
# scripts/test.sh: it is slow and needs nightly. The committed seeds are in fuzz/seeds/<target>;
# what the fuzzer learns goes to fuzz/corpus/<target> (not committed), crashes to
# fuzz/artifacts/<target>. A crash becomes a regression test in the normal suite.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(decode action_gate ring_header h264_decode)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

cd fuzz
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds} s"
    # ring_header writes /dev/shm/ads.fuzz-<pid>; it removes the file after every input.
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 2>&1 |
        grep -E '^(#[0-9]+[[:space:]]+(DONE|INITED)|stat::|==[0-9]+==|SUMMARY|.*panicked|Done)' || true
    if compgen -G "artifacts/$target/crash-*" >/dev/null; then
        echo "!! $target found crashes: fuzz/artifacts/$target" >&2
        exit 1
    fi
done
rm -f /dev/shm/ads.fuzz-*

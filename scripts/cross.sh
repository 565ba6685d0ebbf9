#!/usr/bin/env bash
# Cross-builds the vehicle-side binaries (ads-vehicle, ads-detection, ads-ring, ads-record;
# and ads-viewer, for an arm64 laptop) for a 64-bit ARM board (Raspberry Pi 4/5 on Raspberry Pi OS bookworm, Jetson) on this
# Debian 12 x86_64 machine, and runs them under qemu-user.
#
#   scripts/cross.sh aarch64 [--debug]    # build; binaries in target/aarch64/aarch64-unknown-linux-gnu/release
#   scripts/cross.sh aarch64 --env        # print the environment the build uses (source it to run cargo yourself)
#   scripts/cross.sh aarch64 --check      # check the plan against the workspace, report the set-up; build nothing
#   scripts/cross.sh aarch64 --test       # build, then under qemu-user: the ring's tests (shmem-ipc,
#                                         # ring_processes) and a 20 s smoke of the aarch64 vehicle
#                                         # and detector on the simulator, watched by a native client
#   scripts/cross.sh aarch64 --ring-tests # only shmem-ipc's tests, cross-built and run under qemu-user;
#                                         # needs no sysroot (what CI runs: ~minutes, not the full build)
#
# How: the host's cross gcc (gcc-aarch64-linux-gnu) compiles C/C++ (libzmq, libjpeg-turbo,
# OpenH264, the OpenCV wrappers), clang links against an arm64 *sysroot*: Debian 12 arm64
# packages (libc, libstdc++, OpenCV 4.6, GStreamer 1.22) extracted, not installed, into
# target/aarch64/sysroot by mmdebstrap. Why not Debian multiarch (libopencv-dev:arm64 next to
# libopencv-dev): the two are not co-installable here (apt removes the amd64 OpenCV, through
# libgdal32), and every Multi-Arch: same library must then be at the same version on both
# sides, which upgrades ~80 host packages (systemd among them). The sysroot touches nothing on
# the host, takes ~40 s, and is what qemu-aarch64 runs the binaries against (QEMU_LD_PREFIX).
# Building inside an emulated arm64 chroot would run rustc under qemu: many times slower.
#
# Installs what it needs itself (root, or sudo), like scripts/setup.sh; idempotent: a second
# run installs nothing and reuses the sysroot while the package list below is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

arch=${1:-}
shift || true
if [[ $arch != aarch64 ]]; then
  echo "usage: scripts/cross.sh aarch64 [--debug|--env|--check]" >&2
  exit 2
fi
mode=build
profile=release
while (($#)); do
  case "$1" in
    --debug) profile=debug; shift ;;
    --env) mode=env; shift ;;
    --check) mode=check; shift ;;
    --test) mode=test; shift ;;
    --ring-tests) mode=ring-tests; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cross: unknown option $1" >&2; exit 2 ;;
  esac
done

triple=aarch64-unknown-linux-gnu
gnu=aarch64-linux-gnu
target_dir=$repo/target/aarch64
sysroot=$target_dir/sysroot
suite=bookworm
mirror=${ADS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Host tools: the cross compilers (C for libzmq/libjpeg-turbo/OpenH264, C++ for OpenCV's
# wrappers), qemu-user for running the result, mmdebstrap for the sysroot.
host_packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static mmdebstrap)
# The sysroot: what the binaries link against and load at run time on the board.
sysroot_packages=(libc6-dev libstdc++-12-dev libgcc-12-dev libopencv-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
stamp=$sysroot/.ads-sysroot
stamp_text="$suite ${sysroot_packages[*]} +alternatives -dev"

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

missing_host() {
  local p
  for p in "${host_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

sysroot_ok() { [[ -f $stamp && $(cat "$stamp") == "$stamp_text" ]]; }

# What gets built: package and binary. --check verifies these against the workspace.
builds=(ads-vehicle:ads-vehicle ads-detection:ads-detection ads-tools:ads-ring ads-record:ads-record
  ads-viewer:ads-viewer)

if [[ $mode == check ]]; then
  # Cheap and offline (what CI runs): the plan is consistent with the workspace; whether this
  # machine is set up is reported, not required.
  problems=0
  metadata=$(cargo metadata --no-deps --format-version 1 --locked)
  for b in "${builds[@]}"; do
    if ! python3 -c '
import json, sys
package, binary = sys.argv[1:]
meta = json.load(sys.stdin)
sys.exit(not any(t["name"] == binary and t["kind"] == ["bin"]
                 for p in meta["packages"] if p["name"] == package for t in p["targets"]))
' "${b%%:*}" "${b#*:}" <<<"$metadata"; then
      echo "cross: package ${b%%:*} has no binary ${b#*:}"; problems=1
    fi
  done
  rustc --print target-list | grep -qx "$triple" || { echo "cross: rustc does not know $triple"; problems=1; }
  if ((problems)); then exit 1; fi
  echo "cross: plan ok: ${builds[*]#*:} for $triple"
  m=$(missing_host)
  echo "cross: host packages: ${m:+missing $m}${m:-present}"
  if rustup target list --installed 2>/dev/null | grep -qx "$triple"; then echo "cross: $triple installed"; else echo "cross: $triple not installed"; fi
  if sysroot_ok; then echo "cross: sysroot ready in $sysroot"; else echo "cross: no sysroot yet (made on the first build)"; fi
  exit 0
fi

# Emulated multi-process tests start aarch64 children (ads-ring, the test binary itself), so
# the kernel must hand aarch64 executables to qemu by itself: binfmt_misc. qemu-user-static
# ships the registration (flag F: the interpreter is opened now, so it works in any mount
# namespace); it is registered once per boot and changes nothing for native programs.
ensure_binfmt() {
  local dir=/proc/sys/fs/binfmt_misc
  [[ -e $dir/qemu-aarch64 ]] && return 0
  if [[ ! -e $dir/register ]]; then $sudo mount -t binfmt_misc binfmt_misc "$dir"; fi
  $sudo sh -c "cat /usr/lib/binfmt.d/qemu-aarch64.conf >$dir/register"
  echo "cross: registered qemu-aarch64 with binfmt_misc"
}

if [[ $mode == ring-tests ]]; then
  host_packages=(gcc-aarch64-linux-gnu qemu-user-static)
  m=$(missing_host)
  if [[ -n $m ]]; then
    echo "cross: installing $m"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $m \
      || { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $m; }
  fi
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
  ensure_binfmt
  # Pure Rust on glibc: the cross toolchain's own libc is enough, no sysroot.
  export CARGO_TARGET_DIR=$target_dir/ring
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=$gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/$gnu"
  export QEMU_LD_PREFIX=/usr/$gnu
  started=$SECONDS
  cargo test --locked --target "$triple" -p ads-shmem-ipc --tests
  echo "cross: the ring's tests passed under qemu-aarch64 in $((SECONDS - started)) s"
  exit 0
fi

if [[ $mode == build || $mode == test ]]; then
  m=$(missing_host)
  if [[ -n $m ]]; then
    echo "cross: installing $m"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    $sudo apt-get install -y -q --no-install-recommends $m \
      || { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends $m; }
  fi
  if ! rustup target list --installed | grep -qx "$triple"; then
    rustup target add "$triple"
  fi
  if ! sysroot_ok; then
    echo "cross: making the arm64 sysroot in $sysroot"
    $sudo rm -rf "$sysroot"
    mkdir -p "$target_dir"
    include=$(IFS=,; echo "${sysroot_packages[*]}")
    # extract: packages and their dependencies are unpacked, no maintainer script runs, so
    # no emulation is needed here and nothing on the host changes.
    $sudo mmdebstrap --quiet --variant=extract --mode=root --architectures=arm64 \
      --include="$include" "$suite" "$sysroot" "$mirror"
    if [[ -n $sudo ]]; then $sudo chown -R "$(id -u):$(id -g)" "$sysroot"; fi
    # What maintainer scripts would have done and the link needs: BLAS and LAPACK (OpenCV's
    # core needs libblas.so.3 and liblapack.so.3) are Debian alternatives, made by postinst.
    for lib in blas lapack; do
      ln -sfn "$lib/lib$lib.so.3" "$sysroot/usr/lib/$gnu/lib$lib.so.3"
    done
    # qemu-user (-L / QEMU_LD_PREFIX) looks every absolute path up in the sysroot first: an
    # empty dev/shm there would hide the host's rings from an emulated `readdir("/dev/shm")`,
    # and etc/passwd the host's users. Only what linking and loading need stays.
    (cd "$sysroot" && rm -rf dev tmp var run proc sys home root mnt media opt srv boot \
      && find etc -mindepth 1 -maxdepth 1 ! -name 'ld.so.conf*' -exec rm -rf {} +)
    echo "$stamp_text" >"$stamp"
  fi
fi

# The build environment. The C/C++ compilers are the cc crate's defaults for the triple
# (aarch64-linux-gnu-gcc/g++, whose own glibc 2.36 headers match the sysroot's). pkg-config
# looks only into the sysroot and prefixes what it finds with it. clang links: it understands
# a Debian multiarch sysroot (crt files, libgcc, the linker script in libc.so) and passes it
# to aarch64-linux-gnu-ld, which then finds OpenCV's own dependencies there as well.
env_lines=(
  "CARGO_TARGET_DIR=$target_dir"
  "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=clang"
  "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS=-Clink-arg=--target=$gnu -Clink-arg=--sysroot=$sysroot"
  "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static -L $sysroot"
  "CC_aarch64_unknown_linux_gnu=$gnu-gcc"
  "CXX_aarch64_unknown_linux_gnu=$gnu-g++"
  "AR_aarch64_unknown_linux_gnu=$gnu-ar"
  "PKG_CONFIG_ALLOW_CROSS=1"
  "PKG_CONFIG_SYSROOT_DIR=$sysroot"
  "PKG_CONFIG_LIBDIR=$sysroot/usr/lib/$gnu/pkgconfig:$sysroot/usr/share/pkgconfig"
  # bindgen (nokhwa's V4L2 headers, iceoryx2's POSIX layer) parses the board's headers. The
  # opencv crate's binding generator is not told so: it adds the host's C++ include paths
  # itself, which clash with an aarch64 target; it only generates glue from OpenCV's headers
  # (the sysroot's, through pkg-config), and x86_64 and aarch64 Linux agree on every size.
  "BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu=--sysroot=$sysroot"
  # Child processes of emulated programs (the ring's multi-process tests) find the loader.
  "QEMU_LD_PREFIX=$sysroot"
)
if [[ $mode == env ]]; then
  for l in "${env_lines[@]}"; do printf 'export %s=%q\n' "${l%%=*}" "${l#*=}"; done
  exit 0
fi
for l in "${env_lines[@]}"; do export "${l?}"; done

release=(--release)
if [[ $profile == debug ]]; then release=(); fi
started=$SECONDS
# The viewer too: a laptop may be an arm64 machine, and it costs little more (no OpenCV).
packages=("${builds[@]%%:*}")
bins=("${builds[@]#*:}")
cargo build "${release[@]}" --locked --target "$triple" "${packages[@]/#/--package=}" "${bins[@]/#/--bin=}"
out=$target_dir/$triple/$profile
echo "cross: built in $((SECONDS - started)) s:"
for b in "${bins[@]}"; do
  file "$out/$b" | sed "s|$repo/||"
done
[[ $mode == test ]] || exit 0

ensure_binfmt
started=$SECONDS
# The ring's own tests and its multi-process tests (ads-ring, the aarch64 one next to the
# test binary), all emulated. Same profile as the binaries, so nothing is built twice.
cargo test "${release[@]}" --locked --target "$triple" -p ads-shmem-ipc --tests
cargo test "${release[@]}" --locked --target "$triple" -p ads-tests --test ring_processes
echo "cross: ring tests under qemu-aarch64: $((SECONDS - started)) s"
# The smoke: a native test binary (its own environment, the default target directory)
# starting the aarch64 vehicle and detector.
started=$SECONDS
(
  for l in "${env_lines[@]}"; do unset "${l%%=*}"; done
  export QEMU_LD_PREFIX=$sysroot
  ADS_AARCH64_BIN_DIR=$out cargo test --locked -p ads-tests --test board_emulated -- --nocapture
)
echo "cross: emulated smoke: $((SECONDS - started)) s"

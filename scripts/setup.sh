#!/usr/bin/env bash
# Installs every Debian package the workspace needs to build, test and run.
# Idempotent: when everything is present it installs nothing and does not touch apt.
set -euo pipefail

packages=(
  build-essential  # cc/c++ for libzmq (built from source by the zmq crate)
  pkg-config
  cmake            # libjpeg-turbo (built from source by the turbojpeg crate)
  nasm             # libjpeg-turbo's SIMD code
  clang            # bindgen for iceoryx2's POSIX layer and the opencv crate
  libclang-dev
  libopencv-dev    # OpenCV 4.6 for ads-detection (lanes, DNN); the opencv crate binds to it
  libgstreamer1.0-dev               # GStreamer 1.22 for ads-vehicle --source gstreamer (gstreamer-rs)
  libgstreamer-plugins-base1.0-dev  # its appsink (gstreamer-app)
  gstreamer1.0-plugins-base         # videotestsrc, videoconvert, videoscale, decodebin (the source's tests)
  gstreamer1.0-plugins-good         # qtdemux (MP4), v4l2src, rtspsrc
  gstreamer1.0-libav                # avdec_h264: the dashcam footage through decodebin
  python3          # the protocol conformance client (tests/python), in a venv
  python3-venv
  systemd          # systemd-analyze verify, systemd-sysusers, systemctl --root (tests of the units)
  procps           # pgrep/ps in scripts/systemd-smoke.sh
  strace           # fault injection (a slow fsync) in the stop-chain test
  util-linux       # prlimit, setpriv: the stop-chain tests run the vehicle with few descriptors, unprivileged
  iproute2         # ip netns + tc: the shaped-link test and scripts/bench-link.sh (skipped without)
  tcpdump          # the DSCP marks checked on the wire (vehicle/tests/dscp.rs; skipped without)
  chromium         # the viewer's web UI is tested and benchmarked in a real headless browser
  chromium-driver  # WebDriver for it (fantoccini)
  nodejs           # the ecosystem's JavaScript tools the tests check against (scripts/node-env.sh)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} Debian packages present"
else
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's nodejs comes without npm (NodeSource's includes it): then Debian's npm as well.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing npm"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends npm
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi

#!/usr/bin/env bash
# Debian packages (cargo-deb) of the car and the laptop side, into target/deb/:
#   ads-vehicle_VERSION_ARCH.deb   ads-vehicle, ads-detection, ads-ring, ads-record,
#                                  ads-action-key; ads.target + both services (enabled by
#                                  postinst, started once /etc/ads/action.key exists);
#                                  /etc/ads/{vehicle,detection}.toml as conffiles; the ads user
#   ads-viewer_VERSION_ARCH.deb    ads-viewer; /etc/ads/viewer.toml as a conffile
#
#   scripts/package.sh                    # arm64 (from scripts/cross.sh aarch64) and amd64
#   scripts/package.sh --arch amd64       # only amd64 (builds target/release if needed)
#   scripts/package.sh --arch amd64 --profile debug   # from target/debug (the tests' build)
#   scripts/package.sh --check            # the inputs exist and the maintainer scripts parse
#
# arm64 needs the cross build first (`scripts/cross.sh aarch64`, which also builds the
# viewer's arm64 binary here). Installs cargo-deb (crates.io) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build.sh
repo=$(pwd)

archs=(arm64 amd64)
profile=release
check=0
while (($#)); do
  case "$1" in
    --arch) IFS=, read -r -a archs <<<"$2"; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "package: unknown option $1" >&2; exit 2 ;;
  esac
done
case $profile in release|debug) ;; *) echo "package: --profile release|debug" >&2; exit 2 ;; esac

cargo_deb_version=2.12.1
out=$repo/target/deb
stage=$out/stage
vehicle_bins=(ads-vehicle ads-detection ads-ring ads-record)

# The files the packages take from the repository, rewritten for a system install: binaries
# in /usr/bin, the SSD model (not packaged: fetch it to /usr/share/ads/models for --method dl).
stage_files() {
  rm -rf "$stage"
  local v=$stage/ads-vehicle w=$stage/ads-viewer
  install -d "$v/usr/bin" "$v/lib/systemd/system" "$v/etc/ads" "$v/usr/lib/sysusers.d" "$w/etc/ads"
  install -m 0755 scripts/action-key.sh "$v/usr/bin/ads-action-key"
  for unit in ads.target ads-vehicle.service ads-detection.service; do
    sed -e 's|/usr/local/bin/|/usr/bin/|g' "configs/systemd/$unit" >"$v/lib/systemd/system/$unit"
  done
  for name in vehicle detection; do
    sed -e 's|"data/models/|"/usr/share/ads/models/|g' "configs/$name.toml" >"$v/etc/ads/$name.toml"
  done
  cp configs/viewer.toml "$w/etc/ads/viewer.toml"
  # The same user as scripts/install-vehicle.sh makes.
  cat >"$v/usr/lib/sysusers.d/ads.conf" <<'EOF'
# The user of ads-vehicle.service and ads-detection.service (package ads-vehicle).
#Type Name  ID  GECOS                 Home
u     ads   -   "ads vehicle pipeline" -
m     ads   video
EOF
}

if ((check)); then
  problems=0
  for f in configs/systemd/ads.target configs/systemd/ads-vehicle.service configs/systemd/ads-detection.service \
           configs/vehicle.toml configs/detection.toml configs/viewer.toml scripts/action-key.sh; do
    [[ -f $f ]] || { echo "package: $f is missing"; problems=1; }
  done
  for s in packaging/*/*; do
    sh -n "$s" || { echo "package: $s does not parse"; problems=1; }
    [[ -x $s ]] || { echo "package: $s is not executable"; problems=1; }
  done
  # The units must still name the binaries where the rewrite expects them.
  grep -q '^ExecStart=/usr/local/bin/ads-vehicle ' configs/systemd/ads-vehicle.service \
    || { echo "package: ads-vehicle.service no longer starts /usr/local/bin/ads-vehicle"; problems=1; }
  stage_files
  if grep -rq /usr/local "$stage/ads-vehicle/lib/systemd/system"; then
    echo "package: a staged unit still names /usr/local"; problems=1
  fi
  for b in "${vehicle_bins[@]}"; do
    grep -q "\"target/release/$b\"" vehicle/Cargo.toml || { echo "package: $b is not in ads-vehicle's assets"; problems=1; }
  done
  if ((problems)); then exit 1; fi
  echo "package: inputs present, maintainer scripts parse, units rewritten"
  exit 0
fi

if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  echo "package: installing cargo-deb $cargo_deb_version"
  cargo install cargo-deb --locked --version "$cargo_deb_version"
fi
stage_files
mkdir -p "$out"

for arch in "${archs[@]}"; do
  # A subshell per architecture: the cross environment must not leak into the amd64 build.
  (
  case $arch in
    amd64)
      target_args=()
      bin_dir=target/$profile
      if [[ $profile == release ]]; then
        # The one build set of every script (scripts/lib/build.sh): the workspace's binaries.
        ADS_PROFILE=release ADS_BUILD_ONLY=0 ads_build
      fi
      ;;
    arm64)
      if [[ $profile != release ]]; then echo "package: arm64 packages are release builds" >&2; exit 2; fi
      # The cross build's environment (its own target directory, linker, sysroot).
      eval "$(scripts/cross.sh aarch64 --env)"
      target_args=(--target aarch64-unknown-linux-gnu)
      bin_dir=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release
      ;;
    *) echo "package: unknown architecture $arch (amd64, arm64)" >&2; exit 2 ;;
  esac
  for b in "${vehicle_bins[@]}" ads-viewer; do
    if [[ ! -x $bin_dir/$b ]]; then
      echo "package: $bin_dir/$b is missing (arm64: scripts/cross.sh aarch64 first)" >&2
      exit 1
    fi
  done
  # Stripped: the release build's line tables are for a developer's backtraces, not the car.
  profile_args=(--strip)
  # The tests' debug build: only to be installed in scripts/systemd-smoke.sh, so fast.
  if [[ $profile == debug ]]; then profile_args+=(--profile dev --fast); fi
  for pkg in ads-vehicle ads-viewer; do
    cargo deb -p "$pkg" --no-build "${target_args[@]}" "${profile_args[@]}" --output "$out/"
  done
  )
done
ls -l "$out"/*.deb

# shellcheck shell=bash
# The one build set every script builds: the workspace's binaries, as scripts/test.sh does.
# Cargo unifies features over the packages of one invocation, so a script that built its own
# package set (`-p ads-tools`, `-p ads-vehicle -p …`) compiled its own variant of the shared
# crates; with one set, a fresh user's second script compiles nothing (issue 28;
# scripts/check-build-set.sh checks it).
#
# Source it from a script in scripts/, then `ads_build` and run binaries from "$(ads_bin_dir)".
#
# Environment:
#   ADS_PROFILE=release|dev   the cargo profile (default release; dev is the tests' debug build)
#   ADS_BUILD_ONLY=1          exit 0 right after the build (what check-build-set.sh runs)
#   CARGO_BUILD_TARGET        a cross target: passed on, and part of the binaries' path

ads_profile() {
  local profile=${ADS_PROFILE:-release}
  case $profile in
    release|dev) echo "$profile" ;;
    debug) echo dev ;;
    *) echo "ADS_PROFILE must be release or dev, not $profile" >&2; return 2 ;;
  esac
}

# Where the build's binaries land.
ads_bin_dir() {
  local dir=release
  [[ $(ads_profile) == dev ]] && dir=debug
  echo "${CARGO_TARGET_DIR:-target}/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}$dir"
}

# Builds the set; extra arguments go to cargo (e.g. --target).
ads_build() {
  cargo build --locked --profile "$(ads_profile)" --workspace --bins "$@"
  if [[ ${ADS_BUILD_ONLY:-0} == 1 ]]; then
    exit 0
  fi
}

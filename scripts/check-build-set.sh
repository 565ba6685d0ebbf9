#!/usr/bin/env bash
# Every script builds the same set (scripts/lib/build.sh, issue 28): runs the build step of
# each script that builds (ADS_BUILD_ONLY=1), one after another, in the debug profile, and
# fails if any after the first compiled something (a different package set or feature
# selection compiles its own variant of the shared crates).
#
#   scripts/check-build-set.sh           # in $CARGO_TARGET_DIR (test.sh runs it after its
#                                        # workspace build: then the first compiles nothing too)
#   scripts/check-build-set.sh --fresh   # in a new, empty target directory (one whole debug
#                                        # build, then nothing), removed afterwards
#
# Not checked: scripts/bench-python.sh (makes a Python environment first) and package.sh
# (installs cargo-deb first); both call the same ads_build.
set -euo pipefail
cd "$(dirname "$0")/.."

fresh=0
case "${1:-}" in
  --fresh) fresh=1 ;;
  "") ;;
  *) echo "check-build-set: unknown option $1" >&2; exit 2 ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/ads-build-set.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ((fresh)); then
  export CARGO_TARGET_DIR=$work/target
fi
export ADS_PROFILE=dev ADS_BUILD_ONLY=1 CARGO_TERM_COLOR=never

# Each entry: a script and its arguments. install-vehicle.sh builds before it installs, and
# with DESTDIR it would touch nothing outside it anyway.
steps=(
  "scripts/demo.sh"
  "scripts/bench.sh"
  "scripts/bench-ring.sh"
  "scripts/bench-link.sh"
  "scripts/install-vehicle.sh"
)
first=$fresh failed=0
for step in "${steps[@]}"; do
  log=$work/$(basename "${step%% *}").log
  # shellcheck disable=SC2086 # the entry's words are the command and its arguments
  if ! DESTDIR=$work/root $step >"$log" 2>&1; then
    echo "check-build-set: $step failed:" >&2
    cat "$log" >&2
    exit 1
  fi
  compiled=$(grep -cE '^ *Compiling ' "$log" || true)
  echo "check-build-set: $step compiled $compiled crates"
  if ((!first && compiled > 0)); then
    echo "check-build-set: $step compiled again after the first script's build:" >&2
    grep -E '^ *Compiling ' "$log" >&2
    failed=1
  fi
  first=0
done
exit "$failed"

#!/usr/bin/env bash
# Creates the Python virtual environment of the protocol client (tests/python/ads_client.py)
# and of the Python SDK at target/py-venv: installs tests/python/requirements.txt (and, without
# their dependencies, tests/python/requirements-nodeps.txt) into it,
# then builds the SDK's wheel from the tree (python/, with maturin) and pip-installs it.
# Idempotent: when the venv exists with every pinned version installed and the SDK was built
# from the sources as they are, it changes nothing and does not call pip's index. The last line of stdout is the venv's python, so callers can do
#   py=$(scripts/python-env.sh | tail -n1)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/py-venv"
requirements="$root/tests/python/requirements.txt"
nodeps_requirements="$root/tests/python/requirements-nodeps.txt"
python="$venv/bin/python"
base_python="${PYTHON:-python3}"

# Tests run this concurrently; one at a time builds and installs.
mkdir -p "$root/target"
exec 9>"$root/target/py-venv.lock"
flock 9

if ! command -v "$base_python" >/dev/null 2>&1; then
  echo "python-env: $base_python not found; install python3 (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi

# A venv whose interpreter is gone or broken (python upgraded, half-created) is made again.
if [[ -x "$python" ]] && ! "$python" -c 'import sys' >/dev/null 2>&1; then
  echo "python-env: $venv is broken, recreating it" >&2
  rm -rf "$venv"
fi

if [[ ! -x "$python" ]]; then
  if ! "$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "python-env: the Python venv module is missing; install it (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  mkdir -p "$root/target"
  echo "python-env: creating $venv" >&2
  if ! "$base_python" -m venv "$venv" >&2; then
    rm -rf "$venv"
    echo "python-env: 'python3 -m venv' failed; on Debian install python3-venv" >&2
    exit 1
  fi
fi

# The pinned "name==version" lines of file $1 that are not installed at exactly that version.
missing_from() {
  local line name want have
  while IFS= read -r line; do
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [[ -z "$line" ]] && continue
    name="${line%%==*}"
    want="${line#*==}"
    have="$("$python" - "$name" <<'PY' 2>/dev/null || true
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PY
)"
    if [[ "$have" != "$want" ]]; then
      echo "$line"
    fi
  done <"$1"
}

mapfile -t missing < <(missing_from "$requirements")
if ((${#missing[@]} == 0)); then
  echo "python-env: requirements already installed in $venv" >&2
else
  echo "python-env: installing ${missing[*]}" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --no-input "${missing[@]}" >&2
fi

# Packages used for one small part whose declared dependencies would clash with the pins
# above (donkeycar's tub reader: donkeycar pins numpy<2 and pulls pandas and more; its tub
# reader needs only what requirements.txt pins). Installed without their dependencies, and
# whatever Python version they declare (donkeycar 5.3 says <3.12; the tub reader is plain Python).
mapfile -t missing < <(missing_from "$nodeps_requirements")
if ((${#missing[@]} > 0)); then
  echo "python-env: installing without dependencies ${missing[*]}" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps --ignore-requires-python \
    "${missing[@]}" >&2
fi

# The SDK: rebuilt when any source it is built from changed since the installed wheel.
wheels="$root/target/ads-wheels"
stamp_file="$venv/.ads-sdk-sources"
stamp="$(cd "$root" && find Cargo.toml Cargo.lock python/Cargo.toml python/pyproject.toml python/src python/ads \
  shmem-ipc/Cargo.toml shmem-ipc/src protocol/Cargo.toml protocol/src -type f -not -name '*.pyc' -print0 |
  sort -z | xargs -0 sha256sum | sha256sum)"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] && "$python" -c 'import ads' >/dev/null 2>&1; then
  echo "python-env: the ads SDK is up to date in $venv" >&2
else
  echo "python-env: building the ads SDK wheel (maturin build --release)" >&2
  rm -rf "$wheels"
  "$venv/bin/maturin" build --release --locked --quiet -m "$root/python/Cargo.toml" --out "$wheels" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --no-input --no-index --no-deps \
    --force-reinstall "$wheels"/ads-*.whl >&2
  echo "$stamp" >"$stamp_file"
fi

echo "$python"

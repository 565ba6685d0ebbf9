#!/usr/bin/env bash
# Creates the Python virtual environment of the protocol client (tests/python/ads_client.py)
# at target/py-venv and installs tests/python/requirements.txt into it.
# Idempotent: when the venv exists with every pinned version installed it changes nothing and
# does not call pip's index. The last line of stdout is the venv's python, so callers can do
#   py=$(scripts/python-env.sh | tail -n1)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/py-venv"
requirements="$root/tests/python/requirements.txt"
python="$venv/bin/python"
base_python="${PYTHON:-python3}"

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

# The pinned "name==version" lines that are not installed at exactly that version.
missing=()
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
    missing+=("$line")
  fi
done <"$requirements"

if ((${#missing[@]} == 0)); then
  echo "python-env: requirements already installed in $venv" >&2
else
  echo "python-env: installing ${missing[*]}" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --no-input "${missing[@]}" >&2
fi

echo "$python"

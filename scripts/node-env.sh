#!/usr/bin/env bash
# Installs the JavaScript tools the tests check ads against (tests/node/package.json, pinned by
# tests/node/package-lock.json: the official @foxglove/ws-protocol client, @foxglove/schemas'
# JSON schemas, ajv, @mcap/core) into target/node-env with `npm ci`.
# Idempotent: when the installed tree matches the lock file it changes nothing and does not
# call the registry. The last line of stdout is the node_modules folder, so callers can do
#   NODE_PATH=$(scripts/node-env.sh | tail -n1) node tests/node/foxglove_check.js ...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="$root/target/node-env"

# Tests run this concurrently; one at a time installs.
mkdir -p "$env_dir"
exec 9>"$root/target/node-env.lock"
flock 9

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "node-env: $tool not found; install Node.js (Debian: apt-get install nodejs npm; scripts/setup.sh does)" >&2
    exit 1
  fi
done

stamp_file="$env_dir/.lock-sha256"
stamp="$(cat "$root/tests/node/package.json" "$root/tests/node/package-lock.json" | sha256sum)"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" && -d "$env_dir/node_modules" ]]; then
  echo "node-env: packages already installed in $env_dir" >&2
else
  echo "node-env: npm ci in $env_dir" >&2
  cp "$root/tests/node/package.json" "$root/tests/node/package-lock.json" "$env_dir/"
  (cd "$env_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$stamp" >"$stamp_file"
fi

echo "$env_dir/node_modules"

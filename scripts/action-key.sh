#!/usr/bin/env bash
# The shared key that authenticates actions (docs/security.md, docs/deployment.md).
#
#   scripts/action-key.sh generate PATH            new random key (64 hex digits), mode 0600
#   scripts/action-key.sh install SRC [OWNER]      copy SRC to $DESTDIR/etc/ads/action.key,
#                                                  mode 0600, owned by OWNER (default: ads if
#                                                  that user exists, else the current user)
#   scripts/action-key.sh check PATH               is PATH a usable key file?
#
# The same key goes on the vehicle (actions.key_file in /etc/ads/vehicle.toml or
# ADS_VEHICLE_ACTION_KEY) and on every laptop that sends actions (ads-viewer --action-key).
# Copy it over a channel you trust (scp, a USB stick), never through chat or e-mail.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

check_key() {
    local path=$1 mode
    [[ -f $path ]] || { echo "action-key: $path is not a file" >&2; return 1; }
    mode=$(stat -c %a "$path")
    if (( 8#$mode & 8#077 )); then
        echo "action-key: $path has mode $mode; group and others must have no access (chmod 600 $path)" >&2
        return 1
    fi
    if ! tr -d ' \n\t\r' <"$path" | grep -Eq '^[0-9a-fA-F]{64}$'; then
        echo "action-key: $path does not hold 64 hex digits" >&2
        return 1
    fi
}

cmd=${1:-}
case $cmd in
generate)
    [[ $# -eq 2 ]] || usage
    path=$2
    if [[ -e $path ]]; then
        echo "action-key: $path exists; refusing to overwrite a key (remove it first)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$path")"
    # umask before creating: the key is never readable by others, not even for an instant.
    (umask 077 && od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$path" && echo >>"$path")
    chmod 600 "$path"
    check_key "$path"
    echo "action-key: wrote a new key to $path (mode 600)"
    ;;
install)
    [[ $# -ge 2 && $# -le 3 ]] || usage
    src=$2
    check_key "$src"
    if [[ $# -eq 3 ]]; then
        owner=$3
    elif id ads >/dev/null 2>&1; then
        owner=ads
    else
        owner=$(id -un)
    fi
    dest="${DESTDIR:-}/etc/ads/action.key"
    install -d -m 755 "$(dirname "$dest")"
    if [[ -n ${DESTDIR:-} && $(id -u) -ne 0 ]]; then
        # Staging into a package root as a normal user: ownership is the packager's job.
        install -m 600 "$src" "$dest"
    else
        install -m 600 -o "$owner" -g "$(id -gn "$owner")" "$src" "$dest"
    fi
    check_key "$dest"
    echo "action-key: installed $dest (mode 600, owner $(stat -c %U "$dest"))"
    ;;
check)
    [[ $# -eq 2 ]] || usage
    check_key "$2"
    echo "action-key: $2 is a usable key file"
    ;;
*)
    usage
    ;;
esac

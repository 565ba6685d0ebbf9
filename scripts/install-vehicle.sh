#!/usr/bin/env bash
# Installs the ads pipeline on a vehicle as systemd services (docs/deployment.md):
#   binaries   $PREFIX/bin/ads-vehicle, ads-detection, ads-ring         (0755)
#   units      $UNITDIR/ads.target, ads-vehicle.service, ads-detection.service   (0644)
#   configs    /etc/ads/vehicle.toml, detection.toml (0644; an existing one is kept and the
#              shipped one written next to it as *.toml.new)
#   user       ads (system user, member of video), through /etc/sysusers.d/ads.conf
#   models     $PREFIX/share/ads/models/ (if data/models has them, for --method dl)
# and enables ads.target (boot) with both services in it.
#
# Everything goes under $DESTDIR when it is set (packaging, tests): then nothing outside it is
# touched, the enable symlinks are made offline (`systemctl --root`), the user is written
# into $DESTDIR/etc/passwd (`systemd-sysusers --root`) and nothing is started.
#
#   scripts/install-vehicle.sh                 # build (release) and install on this machine
#   scripts/install-vehicle.sh --start         # ... and start ads.target now
#   DESTDIR=/tmp/root scripts/install-vehicle.sh --bin-dir target/release --no-build
#
# Options:
#   --bin-dir DIR   take the binaries from DIR (default: where scripts/lib/build.sh builds
#                   them: target/release, target/$CARGO_BUILD_TARGET/release when
#                   cross-compiling, under $CARGO_TARGET_DIR when set; ADS_PROFILE=dev: debug)
#   --no-build      do not run cargo; the binaries must already be in --bin-dir
#   --start         start ads.target after installing (never with DESTDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build.sh

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSCONFDIR=${SYSCONFDIR:-/etc/ads}
SYSUSERSDIR=${SYSUSERSDIR:-/etc/sysusers.d}

bin_dir=""
build=1
start=0
while (($#)); do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --start) start=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-vehicle: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z $bin_dir ]]; then
  bin_dir=$(ads_bin_dir)
fi
for dir in "$PREFIX" "$UNITDIR" "$SYSCONFDIR" "$SYSUSERSDIR"; do
  if [[ $dir != /* ]]; then
    echo "install-vehicle: $dir must be an absolute path (it is written into the units)" >&2
    exit 2
  fi
done
if [[ -n $DESTDIR ]]; then
  DESTDIR=$(realpath -m "$DESTDIR")
  if ((start)); then
    echo "install-vehicle: --start makes no sense with DESTDIR (nothing there can run)" >&2
    exit 2
  fi
elif [[ $(id -u) -ne 0 ]]; then
  echo "install-vehicle: run as root (or set DESTDIR to install into a directory)" >&2
  exit 1
fi

binaries=(ads-vehicle ads-detection ads-ring)
if ((build)); then
  # The workspace, like every script (a smaller set would compile its own variant).
  ads_build ${CARGO_BUILD_TARGET:+--target "$CARGO_BUILD_TARGET"}
fi
for b in "${binaries[@]}"; do
  if [[ ! -x $bin_dir/$b ]]; then
    echo "install-vehicle: $bin_dir/$b is missing; build it first (cargo build --release) or pass --bin-dir" >&2
    exit 1
  fi
done

say() { printf 'install-vehicle: %s\n' "$*"; }

# Binaries.
install -d -m 0755 "$DESTDIR$PREFIX/bin"
for b in "${binaries[@]}"; do
  install -m 0755 "$bin_dir/$b" "$DESTDIR$PREFIX/bin/$b"
done
say "binaries in $DESTDIR$PREFIX/bin"

# Units, with this install's paths written in (the shipped ones say /usr/local/bin, /etc/ads).
install -d -m 0755 "$DESTDIR$UNITDIR"
for unit in ads.target ads-vehicle.service ads-detection.service; do
  sed -e "s|/usr/local/bin/|$PREFIX/bin/|g" -e "s|/etc/ads/|$SYSCONFDIR/|g" \
    "configs/systemd/$unit" >"$DESTDIR$UNITDIR/$unit.tmp"
  chmod 0644 "$DESTDIR$UNITDIR/$unit.tmp"
  mv -f "$DESTDIR$UNITDIR/$unit.tmp" "$DESTDIR$UNITDIR/$unit"
done
say "units in $DESTDIR$UNITDIR"

# Configs: never overwrite what the vehicle's owner has tuned.
models_dir=$PREFIX/share/ads/models
install -d -m 0755 "$DESTDIR$SYSCONFDIR"
for name in vehicle detection; do
  target=$DESTDIR$SYSCONFDIR/$name.toml
  staged=$(mktemp)
  # The model paths in the repository's config are relative to the checkout.
  sed -e "s|\"data/models/|\"$models_dir/|g" "configs/$name.toml" >"$staged"
  if [[ -e $target ]] && ! cmp -s "$staged" "$target"; then
    install -m 0644 "$staged" "$target.new"
    say "kept your $target; the shipped one is $target.new"
  else
    install -m 0644 "$staged" "$target"
  fi
  rm -f "$staged"
done
say "configs in $DESTDIR$SYSCONFDIR"

# The SSD model for --method dl, when scripts/fetch-data.sh has fetched it.
models=(data/models/frozen_inference_graph.pb data/models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt)
if [[ -f ${models[0]} && -f ${models[1]} ]]; then
  install -d -m 0755 "$DESTDIR$models_dir"
  install -m 0644 "${models[@]}" "$DESTDIR$models_dir/"
  say "object detection model in $DESTDIR$models_dir"
else
  say "no model in data/models (scripts/fetch-data.sh): --method dl will not start, cv will"
fi

# The ads user: a system user in the video group (cameras, Jetson GPU nodes).
install -d -m 0755 "$DESTDIR$SYSUSERSDIR"
cat >"$DESTDIR$SYSUSERSDIR/ads.conf" <<'EOF'
# The user of ads-vehicle.service and ads-detection.service (scripts/install-vehicle.sh).
#Type Name  ID  GECOS                 Home
u     ads   -   "ads vehicle pipeline" -
m     ads   video
EOF
chmod 0644 "$DESTDIR$SYSUSERSDIR/ads.conf"
if [[ -n $DESTDIR ]]; then
  systemd-sysusers --root="$DESTDIR" "$DESTDIR$SYSUSERSDIR/ads.conf"
else
  systemd-sysusers "$SYSUSERSDIR/ads.conf"
fi
if [[ -z $DESTDIR ]]; then say "user: $(id ads)"; fi

# Enable: ads.target at boot, both services in it.
units=(ads.target ads-vehicle.service ads-detection.service)
if [[ -n $DESTDIR ]]; then
  systemctl --root="$DESTDIR" enable "${units[@]}"
elif [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable "${units[@]}"
  if ((start)); then
    systemctl restart ads.target
    say "started: systemctl status ads-vehicle ads-detection; journalctl -u 'ads-*' -f"
  fi
else
  # Installing into an image or a container without systemd running: enable offline.
  systemctl --root=/ enable "${units[@]}"
  say "systemd is not running here: enabled for the next boot, nothing started"
fi
say "done"

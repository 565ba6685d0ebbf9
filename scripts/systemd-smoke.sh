#!/usr/bin/env bash
# Runs the ads units under a real systemd (252 on Debian 12) on a machine where systemd is not
# PID 1 (a container, a CI VM): systemd boots as PID 1 of a private pid + mount namespace, the
# units are installed there by scripts/install-vehicle.sh (no DESTDIR), and this script checks:
#   - ads.target starts both services as user ads; each says READY=1 with a status line;
#   - the detector reads the vehicle's frames ring (one /dev/shm for both units);
#   - a hung vehicle (SIGSTOP) is killed by the watchdog and restarted, and the detector keeps
#     running (same pid) and re-attaches; the same for a hung detector, the vehicle untouched;
#   - the vehicle drives a serial actuator board (scripts/fake-board.py on a pty, the port
#     allowed by a drop-in as docs/actuators.md says), and after a SIGKILL of the vehicle the
#     unit's ExecStopPost=ads-vehicle neutral puts the board at neutral;
#   - `systemctl stop ads.target` stops both cleanly (exit 0) and leaves no ring in /dev/shm.
#
#   scripts/systemd-smoke.sh [--bin-dir DIR]      # root; DIR defaults to target/release
#   scripts/systemd-smoke.sh --deb FILE           # the same with the ads-vehicle .deb (amd64)
#                                                 # installed by dpkg instead of the script
#
# With --deb, /usr is an overlay too, dpkg installs the package into the namespace's root
# (its postinst must enable the units, create the user and start nothing: no key), the
# conffiles are checked, and at the end `dpkg --purge` with the services running must stop
# them and remove the files.
#
# Isolation: systemd-tmpfiles empties /tmp at boot ("D /tmp"), udev re-triggers devices and
# systemd-sysctl writes kernel settings, so inside the namespace /tmp, /var/tmp and /run are
# fresh tmpfs, /etc, /var and /usr/local are overlays (written under target/systemd-smoke),
# and every unit of sysinit.target that touches the kernel, devices or files (all but
# journald) is masked. The rings live in the host's /dev/shm under names of their own and the
# vehicle listens on loopback ports of its own, so a vehicle running on this machine is not
# disturbed. Takes about a minute (the watchdog periods are 5 s and 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bin_dir=target/release
deb=""
while (($#)); do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --deb) deb=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "systemd-smoke: unknown option $1" >&2; exit 2 ;;
  esac
done
bin_dir=$(realpath "$bin_dir")
if [[ $(id -u) -ne 0 ]]; then
  echo "systemd-smoke: needs root (namespaces, mounts)" >&2
  exit 1
fi

work=$repo/target/systemd-smoke
rm -rf "$work"
mkdir -p "$work"/{etc-up,etc-work,var-up,var-work,local-up,local-work,usr-up,usr-work}
tag=smoke$$
port=$((40000 + RANDOM % 20000))

# The actuator board, on the host: a pty whose slave the vehicle opens (/dev/pts is shared
# with the namespace).
scripts/fake-board.py "$work/board.pty" "$work/board.log" 2>"$work/board.err" &
board_pid=$!
for _ in $(seq 100); do [[ -s $work/board.pty ]] && break; sleep 0.05; done
board_pty=$(cat "$work/board.pty" 2>/dev/null || true)
if [[ -z $board_pty ]]; then
  echo "systemd-smoke: the fake board did not start: $(cat "$work/board.err")" >&2
  kill "$board_pid" 2>/dev/null || true
  exit 1
fi

cat >"$work/boot.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
# Overlays first: their upper directories are under $work, on the host's disk.
mount -t overlay overlay -o lowerdir=/etc,upperdir=$work/etc-up,workdir=$work/etc-work /etc
mount -t overlay overlay -o lowerdir=/var,upperdir=$work/var-up,workdir=$work/var-work /var
mount -t overlay overlay -o lowerdir=/usr/local,upperdir=$work/local-up,workdir=$work/local-work /usr/local
if [[ -n "$deb" ]]; then
  # dpkg writes /usr/bin and /lib/systemd/system (/lib is /usr/lib here): /usr as well.
  mount -t overlay overlay -o lowerdir=/usr,upperdir=$work/usr-up,workdir=$work/usr-work /usr
fi
# Hide this machine's own enabled units, and mask what must not run here.
mount -t tmpfs tmpfs /etc/systemd/system
for u in /lib/systemd/system/sysinit.target.wants/* systemd-udevd.service systemd-udevd-control.socket \\
         systemd-udevd-kernel.socket systemd-udev-trigger.service systemd-tmpfiles-setup.service \\
         systemd-tmpfiles-setup-dev.service systemd-tmpfiles-clean.timer dbus.socket \\
         systemd-journald-audit.socket systemd-journald-dev-log.socket timers.target tmp.mount; do
  u=\$(basename "\$u")
  if [[ \$u != systemd-journald.service ]]; then ln -sf /dev/null "/etc/systemd/system/\$u"; fi
done
cd "$repo"
if [[ -n "$deb" ]]; then
  dpkg -i "$deb" >$work/dpkg.log 2>&1 || { cat $work/dpkg.log; exit 1; }
  cat $work/dpkg.log
else
  scripts/install-vehicle.sh --bin-dir "$bin_dir" --no-build
fi
# Exercise EnvironmentFile=: rings and ports of this run only.
cat >/etc/ads/vehicle.env <<ENV
ADS_VEHICLE_FRAMES_RING=$tag-frames
ADS_VEHICLE_DETECTIONS_RING=$tag-det
ADS_VEHICLE_BROADCAST=tcp://127.0.0.1:$port
ADS_VEHICLE_ACTIONS=tcp://127.0.0.1:$((port + 1))
ADS_VEHICLE_ACTUATOR=serial
ADS_VEHICLE_ACTUATOR_DEVICE=$board_pty
ENV
# The drop-in docs/actuators.md asks for, with the pty's device class instead of char-ttyACM.
mkdir -p /etc/systemd/system/ads-vehicle.service.d
cat >/etc/systemd/system/ads-vehicle.service.d/actuator.conf <<CONF
[Service]
DeviceAllow=char-pts rw
CONF
cat >/etc/ads/detection.env <<ENV
ADS_DETECTION_FRAMES_RING=$tag-frames
ADS_DETECTION_DETECTIONS_RING=$tag-det
ENV
chmod 0600 /etc/ads/vehicle.env /etc/ads/detection.env
# Fresh /tmp, /var/tmp and /run only now: the checkout and its binaries may live under /tmp
# (a CI clone often does), and the installer above had to see them.
cd /
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount -t tmpfs tmpfs /run
export container=other
exec /lib/systemd/systemd --unit=ads.target --log-target=console --log-level=info --show-status=no
EOF
chmod +x "$work/boot.sh"

setsid unshare --pid --fork --mount --propagation private --mount-proc "$work/boot.sh" \
  >"$work/systemd.log" 2>&1 </dev/null &
unshare_pid=$!
systemd_pid=""
passed=0
cleanup() {
  kill "$board_pid" 2>/dev/null || true
  if [[ -n $systemd_pid ]]; then kill -KILL "$systemd_pid" 2>/dev/null || true; fi
  kill -KILL "$unshare_pid" 2>/dev/null || true
  wait "$unshare_pid" 2>/dev/null || true
  # Only this run's rings; after a failure their writers are dead, or dying: the kernel kills
  # the namespace's processes when its PID 1 dies, not necessarily before unshare exits.
  for _ in 1 2 3; do
    sleep 0.3
    rm -f "/dev/shm/ads.$tag-frames" "/dev/shm/ads.$tag-det"
  done
  # Kept after a failure: the journal is in $work/var-up/log/journal (journalctl -D).
  if ((passed)); then rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
  echo "systemd-smoke: FAILED: $*" >&2
  if [[ -n $systemd_pid ]]; then
    nsenter -t "$systemd_pid" -m -p journalctl --no-pager -n 40 -u ads-vehicle -u ads-detection >&2 || true
  fi
  tail -20 "$work/systemd.log" >&2
  exit 1
}
step() { printf '\n==> %s\n' "$*"; }
ns() { nsenter -t "$systemd_pid" -m -p "$@"; }
prop() { ns systemctl show -P "$2" "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (waited ${limit}s)"
    sleep 0.1
  done
}

step "boot systemd as PID 1 of a private namespace"
for _ in $(seq 100); do
  systemd_pid=$(pgrep -P "$unshare_pid" -x systemd || true)
  [[ -n $systemd_pid ]] && break
  sleep 0.1
done
[[ -n $systemd_pid ]] || fail "systemd did not start"
echo "systemd $(ns systemctl --version | head -1 | cut -d' ' -f2) is PID 1 of the namespace (host pid $systemd_pid)"
# is-active with several units succeeds when any one is active: ask one at a time.
active() { ns systemctl is-active --quiet "$1"; }
both_active() { active ads-vehicle && active ads-detection; }
wait_for 120 "ads-vehicle and ads-detection active" both_active

if [[ -n $deb ]]; then
  step "the package: user, enablement, conffiles, nothing started by postinst"
  grep -q "^ads:" "$work/etc-up/passwd" || fail "postinst made no ads user"
  for unit in ads.target ads-vehicle.service ads-detection.service; do
    [[ $(ns systemctl is-enabled "$unit") == enabled ]] || fail "$unit is not enabled"
  done
  conffiles=$(ns dpkg-query -W -f='${Conffiles}' ads-vehicle)
  for f in /etc/ads/vehicle.toml /etc/ads/detection.toml; do
    grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
  done
  [[ $(prop ads-vehicle ExecStart) == *"path=/usr/bin/ads-vehicle "* ]] || fail "the unit does not run /usr/bin/ads-vehicle"
  grep -q "enabled but not started: no action key" "$work/systemd.log" \
    || fail "postinst did not say it starts nothing without a key"
  echo "user ads, units enabled, conffiles: $(grep -o '/etc/ads/[a-z]*.toml' <<<"$conffiles" | xargs)"
fi

step "both running as ads, READY with a status"
for unit in ads-vehicle ads-detection; do
  main=$(prop $unit MainPID)
  user=$(ns ps -o user= -p "$main")
  status=$(prop $unit StatusText)
  echo "$unit: pid $main, user $user, status \"$status\""
  [[ $user == ads ]] || fail "$unit runs as $user"
  [[ $status == running:* ]] || fail "$unit sent no READY status"
done

step "the detector reads the vehicle's ring"
has_log() { ns journalctl --no-pager -u "$1" | grep -q "$2"; }
vehicle_pid=$(prop ads-vehicle MainPID)
wait_for 60 "detection reading frames of pid $vehicle_pid" has_log ads-detection "reading frames writer_pid=$vehicle_pid "
ls -l "/dev/shm/ads.$tag-frames" "/dev/shm/ads.$tag-det"

step "a hung vehicle is restarted by the watchdog; the detector stays"
detection_pid=$(prop ads-detection MainPID)
started=$(now)
ns systemctl kill --signal=SIGSTOP ads-vehicle
restarted() { [[ $(prop ads-vehicle NRestarts) == 1 && $(prop ads-vehicle MainPID) != "$vehicle_pid" ]]; }
wait_for 60 "ads-vehicle restarted" restarted
wait_for 60 "ads-vehicle active again" active ads-vehicle
echo "vehicle pid $vehicle_pid stopped; pid $(prop ads-vehicle MainPID) running after $(since "$started") (WatchdogSec=5s, RestartSec=2s)"
[[ $(prop ads-detection MainPID) == "$detection_pid" && $(prop ads-detection NRestarts) == 0 ]] \
  || fail "the detector was restarted with the vehicle"
vehicle_pid=$(prop ads-vehicle MainPID)
wait_for 60 "detection re-attached to pid $vehicle_pid" has_log ads-detection "reading frames writer_pid=$vehicle_pid "
echo "detector pid $detection_pid kept running and re-attached"

step "a hung detector is restarted by the watchdog; the vehicle stays"
started=$(now)
ns systemctl kill --signal=SIGSTOP ads-detection
detector_restarted() { [[ $(prop ads-detection NRestarts) == 1 ]]; }
wait_for 60 "ads-detection restarted" detector_restarted
wait_for 60 "ads-detection active again" active ads-detection
echo "detector restarted after $(since "$started") (WatchdogSec=10s, RestartSec=2s)"
[[ $(prop ads-vehicle MainPID) == "$vehicle_pid" ]] || fail "the vehicle was restarted with the detector"

step "SIGKILL of the vehicle: ExecStopPost=ads-vehicle neutral puts the board at neutral"
board_lines() { wc -l <"$work/board.log"; }
# The held car's own lines: its stop pulse at the default calibration (brake = neutral).
wait_for 60 "the vehicle driving the board" grep -q '^N [0-9]* 1500 1500$' "$work/board.log"
killed_at=$(board_lines)
vehicle_pid=$(prop ads-vehicle MainPID)
restarts=$(prop ads-vehicle NRestarts)
ns systemctl kill --signal=SIGKILL ads-vehicle
# After the kill: the port hung up (the vehicle died without a word; the board's own timeout
# may fire next), then a writer of its own (sequence from 1: C, N at open, then neutral) that
# is gone again (the port hangs up or the
# board times out; a restarted vehicle would go on with N 4): `ads-vehicle neutral`.
neutral_after_kill() {
  tail -n +"$((killed_at + 1))" "$work/board.log" | tr '\n' '|' \
    | grep -Eq '^([^|]*\|)*hup\|(timeout\|)?C 1 1500 1500\|N 2 1500 1500\|N 3 1500 1500\|(hup|timeout)\|'
}
wait_for 60 "the board put at neutral by ExecStopPost" neutral_after_kill
wait_for 60 "the journal's word from ads-vehicle neutral" has_log ads-vehicle "neutral written (steering 1500 µs, throttle 1500 µs)"
echo "vehicle pid $vehicle_pid SIGKILLed; then the board got: $(tail -n +"$((killed_at + 1))" "$work/board.log" | sed -n '/^hup$/,$p' | head -7 | tr '\n' ' ')"
vehicle_back() { [[ $(prop ads-vehicle NRestarts) -gt $restarts ]] && active ads-vehicle; }
wait_for 60 "ads-vehicle restarted after the SIGKILL" vehicle_back

step "systemctl stop ads.target: clean exits, no ring left"
ns systemctl stop ads.target
stopped() { ! active ads-vehicle && ! active ads-detection; }
wait_for 30 "both units stopped" stopped
for unit in ads-vehicle ads-detection; do
  echo "$unit: $(prop $unit Result), exit status $(prop $unit ExecMainStatus)"
  [[ $(prop $unit ExecMainStatus) == 0 ]] || fail "$unit did not exit cleanly"
done
for ring in "$tag-frames" "$tag-det"; do
  [[ ! -e /dev/shm/ads.$ring ]] || fail "/dev/shm/ads.$ring left behind"
done

step "exposure scores (systemd-analyze security)"
ns systemd-analyze security --no-pager ads-vehicle.service ads-detection.service | grep 'Overall' || true

if [[ -n $deb ]]; then
  step "dpkg --purge with the services running stops them and removes the files"
  ns systemctl start ads.target
  wait_for 120 "ads-vehicle and ads-detection active again" both_active
  ns dpkg --purge ads-vehicle >"$work/purge.log" 2>&1 || fail "dpkg --purge failed: $(cat "$work/purge.log")"
  stopped_all() { ! active ads-vehicle && ! active ads-detection; }
  wait_for 30 "both units stopped by the removal" stopped_all
  for f in /usr/bin/ads-vehicle /lib/systemd/system/ads-vehicle.service /etc/ads/vehicle.toml; do
    ! ns test -e "$f" || fail "$f is still there after the purge"
  done
  for ring in "$tag-frames" "$tag-det"; do
    [[ ! -e /dev/shm/ads.$ring ]] || fail "/dev/shm/ads.$ring left behind by the removal"
  done
  echo "purged: services stopped, binaries, units and configs gone"
fi
echo
passed=1
echo "systemd-smoke: all checks passed"

#!/usr/bin/env bash
# The main job: the whole pipeline on this machine. ads-vehicle (built-in simulator),
# ads-detection (lanes) and ads-viewer (web UI on :8080), built in release mode.
# Ctrl-C stops all three in stages (SIGTERM, a grace period, SIGKILL) and checks that
# nothing of ours is left in /dev/shm. A process that dies on its own is reported and the
# demo stops (exit status 1): nothing fails silently.
#
#   scripts/demo.sh [--port 8080] [--vehicle-port 5557] [--method cv|dl]
#                   [--track oval|s-bends|long] [--seconds N]
#
# The vehicle publishes on 127.0.0.1:5557 and takes actions on :5558 (the vehicle port + 1), video on :5559 (+ 2),
# so a second viewer or tests/python/ads_client.py can join.
#
# Environment: ADS_PROFILE=dev (or ADS_DEMO_PROFILE=dev) uses debug builds (faster to build,
# slower to run); scripts/lib/build.sh says what is built;
# ADS_VIEWER_BIND=0.0.0.0 opens the web UI to the network (see docs/security.md first).
set -euo pipefail
cd "$(dirname "$0")/.."

port=8080 vehicle_port=5557 method=cv track=oval seconds=0 grace=5
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --vehicle-port) vehicle_port=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --track) track=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
ADS_PROFILE=${ADS_PROFILE:-${ADS_DEMO_PROFILE:-release}}
source scripts/lib/build.sh
ads_build
bin=$(ads_bin_dir)
if [[ $method == dl ]]; then
  scripts/fetch-data.sh
fi

# Our own ring names, so a demo never touches a vehicle service running on this machine.
frames="demo$$-frames" detections="demo$$-detections"
pub_port=$vehicle_port action_port=$((vehicle_port + 1)) video_port=$((vehicle_port + 2))
declare -A pids=()
log() { printf 'demo: %s\n' "$*" >&2; }

start() {
  local name=$1; shift
  "$@" &
  pids[$name]=$!
  log "started $name (pid ${pids[$name]})"
}

stopping=0
stop_all() {
  [[ $stopping == 1 ]] && return
  stopping=1
  log "stopping: SIGTERM to viewer, detection, vehicle"
  for name in viewer detection vehicle; do
    [[ -n ${pids[$name]:-} ]] && kill -TERM "${pids[$name]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + grace))
  for name in viewer detection vehicle; do
    local pid=${pids[$name]:-}
    [[ -z $pid ]] && continue
    while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop within ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  local left
  left=$(find /dev/shm -maxdepth 1 -name "ads.demo$$-*" 2>/dev/null || true)
  if [[ -n $left ]]; then
    # Only after SIGKILL: every process of ours is gone, so nobody maps these any more.
    log "removing what a killed process left in /dev/shm: $left"
    rm -f $left
  else
    log "stopped; nothing left in /dev/shm"
  fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

start vehicle "$bin/ads-vehicle" --track "$track" --control detections \
  --broadcast "tcp://127.0.0.1:$pub_port" --actions "tcp://127.0.0.1:$action_port" \
  --video-endpoint "tcp://127.0.0.1:$video_port" \
  --frames-ring "$frames" --detections-ring "$detections"
start detection "$bin/ads-detection" --method "$method" \
  --frames-ring "$frames" --detections-ring "$detections"
start viewer "$bin/ads-viewer" --vehicle "tcp://127.0.0.1:$pub_port" \
  --actions "tcp://127.0.0.1:$action_port" --video "tcp://127.0.0.1:$video_port" --port "$port"

url="http://127.0.0.1:$port/"
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
cat >&2 <<EOF

  ads demo running: open $url
  (MJPEG for VLC: ${url}stream.mjpg · metrics: ${url}metrics · Ctrl-C stops everything)

EOF

started=$SECONDS
while true; do
  for name in vehicle detection viewer; do
    pid=${pids[$name]}
    if ! kill -0 "$pid" 2>/dev/null; then
      status=0
      wait "$pid" || status=$?
      log "$name (pid $pid) exited on its own with status $status; stopping the demo"
      unset "pids[$name]"
      stop_all
      exit 1
    fi
  done
  if [[ $seconds -gt 0 && $((SECONDS - started)) -ge $seconds ]]; then
    log "ran for ${seconds}s"
    stop_all
    exit 0
  fi
  sleep 0.5
done

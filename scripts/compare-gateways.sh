#!/usr/bin/env bash
# Two builds of the gateway side by side, each against its own ceiling (`loadgen ceiling-gateway`
# of the same build), interleaved round after round on this machine's NATS: requests/s, the
# processes' CPU per 1 000 webhooks (from /proc) and NATS's. What a change to the gateway's hot
# path moved, measured in one run (README, Benchmark).
#
# Usage: scripts/compare-gateways.sh BUILD_A BUILD_B [ROUNDS] [CONCURRENCY] [REQUESTS]
# where each BUILD is a folder holding a release `gateway` and `loadgen` (copy target/release's
# before a change). Defaults: 4 rounds, 64 in flight, 20 000 webhooks per measurement.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=$1 B=$2 ROUNDS=${3:-4} CONCURRENCY=${4:-64} REQUESTS=${5:-20000}
SUFFIX=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export LIVEKIT_KEYS="compare$SUFFIX: $(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222} METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn
export WEBHOOK_STREAM="COMPARE_$SUFFIX" WEBHOOK_SUBJECT_PREFIX="compare$SUFFIX.webhook"
export HEARTBEAT_STREAM="COMPARE_${SUFFIX}_HEARTBEATS" HEARTBEAT_SUBJECT_PREFIX="compare$SUFFIX.heartbeat"
LOGS=$(mktemp -d)

declare -A PORT PID
start() { # name binary [args]
  local name=$1 binary=$2
  shift 2
  PORT[$name]=$(free_port)
  LISTEN_ADDR="127.0.0.1:${PORT[$name]}" CEILING_SUBJECT="compare$SUFFIX.webhook.$name" \
    "$binary" "$@" >"$LOGS/$name.log" 2>&1 &
  PID[$name]=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:${PORT[$name]}/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "[compare] $name did not become ready: $LOGS/$name.log" >&2
  exit 1
}
cleanup() {
  kill "${PID[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  "$ROOT/scripts/nats-delete-streams.py" "$WEBHOOK_STREAM" "$HEARTBEAT_STREAM" 2>/dev/null || true
}
trap cleanup EXIT

# The first gateway makes the streams; the ceilings publish to subjects of them.
start gateway-a "$A/gateway"
start gateway-b "$B/gateway"
start ceiling-a "$A/loadgen" ceiling-gateway
start ceiling-b "$B/loadgen" ceiling-gateway

nats_pid=$(pgrep -xo nats-server || true)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
measure() { # name: one measurement, printed as a row
  local name=$1 pid=${PID[$1]}
  local cpu=$(ticks "$pid") nats=$(ticks "${nats_pid:-self}")
  local rate
  rate=$("$A/loadgen" gateway --url "http://127.0.0.1:${PORT[$name]}" --requests "$REQUESTS" \
    --concurrency "$CONCURRENCY" 2>/dev/null | awk -F'|' -v c="$CONCURRENCY" '$2 + 0 == c {print $4 + 0; exit}')
  # Ticks are 10 ms: ticks * 10 ms * 1000 / requests.
  echo "| $round | $name | $rate | $((($(ticks "$pid") - cpu) * 10000 / REQUESTS)) | $((($(ticks "${nats_pid:-self}") - nats) * 10000 / REQUESTS)) |"
}

echo "[compare] A = $A, B = $B; $ROUNDS rounds, $REQUESTS webhooks at $CONCURRENCY in flight each"
echo
echo "| round | process | requests/s | its CPU ms per 1 000 | NATS CPU ms per 1 000 |"
echo "|---:|---|---:|---:|---:|"
order=(ceiling-a gateway-a ceiling-b gateway-b)
for round in $(seq "$ROUNDS"); do
  for name in "${order[@]}"; do measure "$name"; done
  # Each round in the reverse order of the one before.
  order=("${order[3]}" "${order[2]}" "${order[1]}" "${order[0]}")
done

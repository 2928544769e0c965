#!/usr/bin/env bash
# `make run`: the whole system on this machine. Starts NATS and PostgreSQL when needed, then the
# gateway, a worker and the sweeper; Ctrl-C stops all of it (and the servers it started).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.local"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/${PROFILE:-debug}"
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/attendance}
export LISTEN_ADDR=${LISTEN_ADDR:-0.0.0.0:8080}

log() { printf '[run] %s\n' "$*" >&2; }

"$ROOT/scripts/services.sh" start

# A development key pair, made once, unless keys are configured.
if [ -z "${LIVEKIT_API_KEY:-}${LIVEKIT_KEYS:-}${LIVEKIT_KEYS_FILE:-}" ]; then
  mkdir -p "$STATE"
  if [ ! -s "$STATE/livekit-keys.yaml" ]; then
    (umask 077; printf 'devkey: %s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '/+=')" > "$STATE/livekit-keys.yaml")
  fi
  export LIVEKIT_KEYS_FILE="$STATE/livekit-keys.yaml"
  log "LiveKit keys: $LIVEKIT_KEYS_FILE (give livekit-server the same key_file)"
fi

pids=()
stop_all() {
  trap - INT TERM EXIT
  log "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  "$ROOT/scripts/services.sh" stop
}
trap stop_all INT TERM EXIT

METRICS_ADDR=${GATEWAY_METRICS_ADDR:-127.0.0.1:9090} "$BIN/gateway" & pids+=($!)
METRICS_ADDR=${WORKER_METRICS_ADDR:-127.0.0.1:9091} "$BIN/worker" & pids+=($!)
METRICS_ADDR=${SWEEPER_METRICS_ADDR:-127.0.0.1:9092} "$BIN/sweeper" & pids+=($!)

port=${LISTEN_ADDR##*:}
log "gateway: http://127.0.0.1:$port  (LiveKit webhook URL: http://<this host>:$port/webhooks/livekit)"
log "probes: /healthz /readyz /metrics on the gateway's metrics address (${GATEWAY_METRICS_ADDR:-127.0.0.1:9090}; the probes also on its port), the worker (${WORKER_METRICS_ADDR:-127.0.0.1:9091}) and the sweeper (${SWEEPER_METRICS_ADDR:-127.0.0.1:9092})"
log "live page: http://127.0.0.1:$port/rooms/<room>#<LiveKit token with roomAdmin>"
log "Ctrl-C stops everything"
# Stop everything as soon as one service exits.
wait -n "${pids[@]}" || true

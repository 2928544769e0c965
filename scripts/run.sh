#!/usr/bin/env bash
# `make run`: the whole system on this machine. Starts NATS and PostgreSQL when needed, then the
# gateway, a worker, the sweeper and the report deliverer (`worker deliver`); Ctrl-C stops all of
# it (and the servers it started). Without DELIVERY_ENDPOINTS_FILE, reports go to the example
# receiver (examples/receiver/standard_webhooks_receiver.py), which verifies them with the
# reference library and writes them to .local/received-reports.jsonl.
# `scripts/run.sh --cluster` (`make run NATS_CLUSTER=3`): NATS as a local 3-node cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.local"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/${PROFILE:-debug}"
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/attendance}
export LISTEN_ADDR=${LISTEN_ADDR:-0.0.0.0:8080}

log() { printf '[run] %s\n' "$*" >&2; }

# `--cluster` or NATS_CLUSTER=<nodes> (`make run NATS_CLUSTER=3`): a local JetStream cluster
# (scripts/nats-cluster.sh) instead of one server; every stream with 3 replicas, and the services
# given every node's URL. A cluster that was running already is left running.
[ "${1:-}" != --cluster ] || export NATS_CLUSTER=${NATS_CLUSTER:-3}
cluster_started=
if [ -n "${NATS_CLUSTER:-}" ]; then
  "$ROOT/scripts/nats-cluster.sh" status || cluster_started=1
  NATS_URL=$("$ROOT/scripts/nats-cluster.sh" start)
  export WEBHOOK_STREAM_REPLICAS=${WEBHOOK_STREAM_REPLICAS:-3} DLQ_STREAM_REPLICAS=${DLQ_STREAM_REPLICAS:-3} \
    PRESENCE_STREAM_REPLICAS=${PRESENCE_STREAM_REPLICAS:-3} REPORT_STREAM_REPLICAS=${REPORT_STREAM_REPLICAS:-3}
  log "NATS: a local cluster of $NATS_CLUSTER nodes ($NATS_URL), streams with $WEBHOOK_STREAM_REPLICAS replicas"
fi

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

# Meeting reports: to the operator's endpoints file, or to a local receiver made once.
if [ -z "${DELIVERY_ENDPOINTS_FILE:-}" ]; then
  mkdir -p "$STATE"
  RECEIVER_PORT=${RECEIVER_PORT:-8099}
  if [ ! -s "$STATE/endpoints.yaml" ]; then
    secret="whsec_$(head -c 32 /dev/urandom | base64)"
    (umask 077; printf 'endpoints:\n  - name: local\n    url: http://127.0.0.1:%s/attendance\n    secrets: [%s]\n' \
      "$RECEIVER_PORT" "$secret" > "$STATE/endpoints.yaml")
  fi
  "$STATE/py/bin/python" -c "import standardwebhooks" 2>/dev/null || {
    [ -x "$STATE/py/bin/pip" ] || python3 -m venv "$STATE/py"
    log "installing standardwebhooks into .local/py (the example receiver)"
    "$STATE/py/bin/pip" install -q standardwebhooks
  }
  export DELIVERY_ENDPOINTS_FILE="$STATE/endpoints.yaml"
  # The example receiver is on this machine: an internal address the deliverer refuses unless allowed.
  export DELIVERY_ALLOWED_NETWORKS=${DELIVERY_ALLOWED_NETWORKS:-127.0.0.1/32}
  start_receiver=1
fi

pids=()
stop_all() {
  trap - INT TERM EXIT
  log "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  "$ROOT/scripts/services.sh" stop
  [ -z "$cluster_started" ] || "$ROOT/scripts/nats-cluster.sh" stop
}
trap stop_all INT TERM EXIT

METRICS_ADDR=${GATEWAY_METRICS_ADDR:-127.0.0.1:9090} "$BIN/gateway" & pids+=($!)
METRICS_ADDR=${WORKER_METRICS_ADDR:-127.0.0.1:9091} "$BIN/worker" & pids+=($!)
METRICS_ADDR=${SWEEPER_METRICS_ADDR:-127.0.0.1:9092} "$BIN/sweeper" & pids+=($!)
OTEL_SERVICE_NAME=${DELIVER_SERVICE_NAME:-attendance-deliver} \
  METRICS_ADDR=${DELIVER_METRICS_ADDR:-127.0.0.1:9093} "$BIN/worker" deliver & pids+=($!)
if [ -n "${start_receiver:-}" ]; then
  secret=$(sed -n 's/^    secrets: \[\(.*\)\]$/\1/p' "$STATE/endpoints.yaml")
  "$STATE/py/bin/python" "$ROOT/examples/receiver/standard_webhooks_receiver.py" --port "$RECEIVER_PORT" \
    --record "$STATE/received-reports.jsonl" --secret "$secret" & pids+=($!)
  log "meeting reports: to the example receiver on 127.0.0.1:$RECEIVER_PORT, recorded in .local/received-reports.jsonl (endpoints: $DELIVERY_ENDPOINTS_FILE)"
fi

port=${LISTEN_ADDR##*:}
log "gateway: http://127.0.0.1:$port  (LiveKit webhook URL: http://<this host>:$port/webhooks/livekit)"
log "probes: /healthz /readyz /metrics on the gateway's metrics address (${GATEWAY_METRICS_ADDR:-127.0.0.1:9090}; the probes also on its port), the worker (${WORKER_METRICS_ADDR:-127.0.0.1:9091}), the sweeper (${SWEEPER_METRICS_ADDR:-127.0.0.1:9092}) and the deliverer (${DELIVER_METRICS_ADDR:-127.0.0.1:9093})"
log "live page: http://127.0.0.1:$port/rooms/<room>#<LiveKit token with roomAdmin>"
log "Ctrl-C stops everything"
# Stop everything as soon as one service exits.
wait -n "${pids[@]}" || true

#!/usr/bin/env bash
# `make bench`: a release gateway on this machine's NATS, driven by loadgen at a few concurrency
# levels. Sizes: BENCH_REQUESTS (default 20000 per level), BENCH_CONCURRENCY (default 1,16,64,256).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.local"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PORT=${BENCH_PORT:-18080}
mkdir -p "$STATE"
keys="$STATE/bench-keys.yaml"
[ -s "$keys" ] || (umask 077; printf 'benchkey: %s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '/+=')" > "$keys")

LISTEN_ADDR=127.0.0.1:$PORT LIVEKIT_KEYS_FILE=$keys RUST_LOG=warn \
  WEBHOOK_STREAM=BENCH_WEBHOOKS WEBHOOK_SUBJECT_PREFIX=bench.webhook WEBHOOK_STREAM_MAX_AGE=10m \
  "$BIN/gateway" &
gateway=$!
trap 'kill -TERM $gateway 2>/dev/null; wait $gateway 2>/dev/null || true' EXIT

echo "gateway $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $(nproc) cores, NATS $NATS_URL, $(date -u +%FT%TZ)"
LIVEKIT_KEYS_FILE=$keys "$BIN/loadgen" gateway --url "http://127.0.0.1:$PORT" \
  --requests "${BENCH_REQUESTS:-20000}" --concurrency "${BENCH_CONCURRENCY:-1,16,64,256}"

# Workers: a realistic workload published straight into a fresh stream, then applied by 1 and
# by 2 workers into a fresh database; events/s from the workers' start to the consumer drained.
kill -TERM $gateway 2>/dev/null; wait $gateway 2>/dev/null || true
trap - EXIT
admin_url="${DATABASE_URL%/*}/postgres"
echo
echo "workers: ${BENCH_ROOMS:-100} rooms x ${BENCH_PARTICIPANTS:-50} participants (joins, leaves, reconnects, lost events, rooms finishing)"
for workers in 1 2; do
  suffix="$(date +%s)$RANDOM"
  export WEBHOOK_STREAM="BENCH_APPLY_$suffix" WEBHOOK_SUBJECT_PREFIX="benchapply$suffix.webhook" WEBHOOK_STREAM_MAX_AGE=15m \
    DLQ_STREAM="BENCH_DLQ_$suffix" DLQ_SUBJECT_PREFIX="benchdlq$suffix" DLQ_MAX_AGE=15m CONSUMER_NAME=bench \
    METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn
  psql "$admin_url" -qc "CREATE DATABASE bench_$suffix"
  db_url="${DATABASE_URL%/*}/bench_$suffix"
  DATABASE_URL=$db_url "$BIN/worker" migrate >/dev/null
  events=$("$BIN/loadgen" publish --rooms "${BENCH_ROOMS:-100}" --participants-per-room "${BENCH_PARTICIPANTS:-50}" | awk '{print $2}')
  pids=()
  for _ in $(seq 1 $workers); do DATABASE_URL=$db_url "$BIN/worker" & pids+=($!); done
  printf '%s worker(s): ' "$workers"
  "$BIN/loadgen" drain --events "$events" --consumer bench
  kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  psql "$admin_url" -qc "DROP DATABASE bench_$suffix WITH (FORCE)"
done

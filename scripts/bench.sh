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

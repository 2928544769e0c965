#!/usr/bin/env bash
# Where the gateway's CPU goes under webhook load: a release gateway on this machine's NATS (a
# stream of its own, deleted afterwards), `loadgen gateway` sending distinct signed webhooks at
# CONCURRENCY (64), and `perf record` (Debian's linux-perf) on the gateway for PROFILE_SECONDS (10).
# PROFILE_TARGET=ceiling profiles the gateway's ceiling (`loadgen ceiling-gateway`) under the same
# load instead, to compare the two. CALL_GRAPH=dwarf records whole call chains (the release build
# keeps no frame pointers; `perf report --children` then gives each function's inclusive share,
# and scripts/profile-parts.py, printed at the end, the samples by part of a webhook's path).
# Prints the hottest symbols (self time) and writes perf.data and perf-report.txt in
# bench-results/profile-<time>/. The release binaries must be built (`cargo build --release`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
CONCURRENCY=${CONCURRENCY:-64}
SECONDS_PROFILED=${PROFILE_SECONDS:-10}
TARGET=${PROFILE_TARGET:-gateway}
CALL_GRAPH=${CALL_GRAPH:-fp}
command -v perf >/dev/null || { echo "[profile] perf is missing (Debian: apt-get install linux-perf)" >&2; exit 1; }

OUT="$ROOT/bench-results/profile-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
SUFFIX=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KEYS="profile$SUFFIX: $(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
export LIVEKIT_KEYS="$KEYS" NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export WEBHOOK_STREAM="PROFILE_$SUFFIX" WEBHOOK_SUBJECT_PREFIX="profile$SUFFIX.webhook"
export HEARTBEAT_STREAM="PROFILE_${SUFFIX}_HEARTBEATS" HEARTBEAT_SUBJECT_PREFIX="profile$SUFFIX.heartbeat"

LISTEN_ADDR="127.0.0.1:$PORT" METRICS_ADDR=127.0.0.1:0 RUST_LOG=warn "$BIN/gateway" >"$OUT/gateway.log" 2>&1 &
GATEWAY=$!
CEILING=
cleanup() {
  [ -z "$CEILING" ] || kill "$CEILING" 2>/dev/null || true
  kill "$GATEWAY" 2>/dev/null || true
  wait "$GATEWAY" 2>/dev/null || true
  "$ROOT/scripts/nats-delete-streams.py" "$WEBHOOK_STREAM" "$HEARTBEAT_STREAM" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

PROFILED=$GATEWAY
if [ "$TARGET" = ceiling ]; then
  # On the stream the gateway made, as in `make bench`.
  PORT_CEILING=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  LISTEN_ADDR="127.0.0.1:$PORT_CEILING" CEILING_SUBJECT="profile$SUFFIX.webhook.ceiling" \
    "$BIN/loadgen" ceiling-gateway >"$OUT/ceiling.log" 2>&1 &
  CEILING=$!
  PROFILED=$CEILING PORT=$PORT_CEILING
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# Enough requests to outlast the profile (signed before sending: wait for the sending to start).
"$BIN/loadgen" gateway --url "http://127.0.0.1:$PORT" --requests 300000 --concurrency "$CONCURRENCY" \
  >"$OUT/load.txt" 2>&1 &
LOAD=$!
sleep 6
if [ "$CALL_GRAPH" = dwarf ]; then GRAPH=(--call-graph dwarf,16384); else GRAPH=(-g); fi
perf record -F 999 "${GRAPH[@]}" -o "$OUT/perf.data" -p "$PROFILED" -- sleep "$SECONDS_PROFILED" 2>"$OUT/perf-record.log"
kill "$LOAD" 2>/dev/null || true
wait "$LOAD" 2>/dev/null || true
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' >"$OUT/perf-report.txt"
grep -E '^ +[0-9]' "$OUT/perf-report.txt" | head -40 || true  # head closes the pipe early
if [ "$CALL_GRAPH" = dwarf ]; then
  echo "[profile] by part of the path (scripts/profile-parts.py):"
  "$ROOT/scripts/profile-parts.py" "$OUT/perf.data" | tee "$OUT/parts.txt"
fi
echo "[profile] $TARGET: $OUT" >&2

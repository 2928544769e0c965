#!/usr/bin/env bash
# `make bench` / `make bench-quick`: the benchmark report. The release binaries of the gateway,
# workers and sweeper run as separate processes on this machine's NATS and PostgreSQL (streams
# and databases of the run's own, removed afterwards); `loadgen bench` drives them and writes
# bench-results/<run>/report.md and timeline.png (bench-results/latest links to the newest).
# Arguments go to `loadgen bench` (see `target/release/loadgen bench --help`), except `--cluster`:
# the run then goes against the local 3-node JetStream cluster of scripts/nats-cluster.sh (started
# if it is not running, and then stopped afterwards), with every stream on 3 replicas.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf

# The plot's text needs a TrueType font: Debian's fonts-dejavu-core.
if [ ! -f "$FONT" ]; then
  echo "[bench] installing Debian packages: fonts-dejavu-core" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y --no-install-recommends fonts-dejavu-core >/dev/null 2>&1 \
    || { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends fonts-dejavu-core >/dev/null; } \
    || echo "[bench] no font: the report will say the plot was not drawn" >&2
fi

args=() cluster=
for arg in "$@"; do
  if [ "$arg" = --cluster ]; then cluster=1; else args+=("$arg"); fi
done
if [ -n "$cluster" ]; then
  "$ROOT/scripts/nats-cluster.sh" status || trap '"$ROOT/scripts/nats-cluster.sh" stop' EXIT
  NATS_URL=$("$ROOT/scripts/nats-cluster.sh" start)
  export NATS_URL
  args+=(--stream-replicas 3)
  echo "[bench] against the local cluster: $NATS_URL" >&2
fi

cd "$ROOT"
"$BIN/loadgen" bench --bin-dir "$BIN" --out "$ROOT/bench-results" "${args[@]}"

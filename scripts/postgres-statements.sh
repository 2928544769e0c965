#!/usr/bin/env bash
# A PostgreSQL of its own that counts statements (pg_stat_statements preloaded, planning time
# too), for `make bench` to show where the workers' time in PostgreSQL goes:
#   DATABASE_URL=$(scripts/postgres-statements.sh start) make bench
#   scripts/postgres-statements.sh stop
# `start` prints the server's URL (its data in .local/postgres-statements, port
# PGSTAT_PORT, 55432 unless set). Otherwise as the shared server is (Debian's defaults), so that
# figures compare; the counting itself costs PostgreSQL a little CPU.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA="$ROOT/.local/postgres-statements"
PORT="${PGSTAT_PORT:-55432}"
COUNTING="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
COUNTING+=" -c pg_stat_statements.track_planning=on"

log() { echo "[postgres-statements] $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=scripts/postgres-bin.sh
source "$ROOT/scripts/postgres-bin.sh"

start() {
  local bin; bin=$(pg_bin) || die "no initdb under /usr/lib/postgresql/*/bin (make test installs postgresql)"
  if [ ! -s "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" != 0 ] || chown postgres: "$DATA"
    chmod 700 "$DATA"
    as_postgres "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "starting PostgreSQL with pg_stat_statements on 127.0.0.1:$PORT"
    as_postgres "$bin/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=200 $COUNTING" start >/dev/null
  fi
  echo "postgres://postgres@127.0.0.1:$PORT/postgres"
}

stop() {
  local bin; bin=$(pg_bin) || exit 0
  [ -s "$DATA/PG_VERSION" ] || exit 0
  as_postgres "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac

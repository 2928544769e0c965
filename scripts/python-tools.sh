#!/usr/bin/env bash
# `make test`: the project-local Python (`.local/py`) with what the tests run that nobody here
# wrote: LiveKit's official server SDK (`livekit-api`, for examples/backend/view_link.py).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.local/py"
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import livekit.api" 2>/dev/null \
  || { echo "[python-tools] installing livekit-api into .local/py" >&2; "$VENV/bin/pip" install -q livekit-api; }

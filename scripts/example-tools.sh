#!/usr/bin/env bash
# `make test`: what the examples' tests run that nobody here wrote, installed when missing:
# LiveKit's official server SDK (`livekit-api`, PyPI) in the project-local Python (`.local/py`),
# for examples/backend/view_link.py; openapi-spec-validator and schemathesis (PyPI), for
# gateway/openapi.yaml; the Standard Webhooks reference library (`standardwebhooks`, PyPI), for
# examples/receiver/standard_webhooks_receiver.py (worker deliver's tests);
# and Debian's `php-cli`, for examples/backend/view_link.php.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.local/py"
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import livekit.api" 2>/dev/null \
  || { echo "[example-tools] installing livekit-api into .local/py" >&2; "$VENV/bin/pip" install -q livekit-api; }
"$VENV/bin/python" -c "import standardwebhooks" 2>/dev/null \
  || { echo "[example-tools] installing standardwebhooks into .local/py" >&2; "$VENV/bin/pip" install -q standardwebhooks; }
[ -x "$VENV/bin/openapi-spec-validator" ] && [ -x "$VENV/bin/schemathesis" ] \
  || { echo "[example-tools] installing openapi-spec-validator and schemathesis into .local/py" >&2;
       "$VENV/bin/pip" install -q openapi-spec-validator schemathesis; }
if ! command -v php >/dev/null; then
  echo "[example-tools] installing Debian packages: php-cli" >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y --no-install-recommends php-cli >/dev/null 2>&1 \
    || { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends php-cli >/dev/null; }
fi

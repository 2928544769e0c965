#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the live page's browser tests, when missing.
set -euo pipefail
if command -v chromedriver >/dev/null && [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "[browser] installing Debian packages: chromium chromium-driver" >&2
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
as_root apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
  || { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }

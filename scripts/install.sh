#!/usr/bin/env bash
# Idempotent set-up: system libraries (Debian), a virtual environment .venv with the
# pinned requirements. Safe to re-run; a no-op when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
ldconfig -p 2>/dev/null | grep -q libopenjp2 || need+=(libopenjp2-7)   # glymur needs OpenJPEG >= 2.4
[ -x /usr/bin/chromium ] || need+=(chromium)   # headless browser for tests/test_browser.py (Debian's build)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt

#!/usr/bin/env bash
# One-command set-up: system libraries, a virtual environment with the pinned
# requirements, then the main job on the embedded default data.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ldconfig -p 2>/dev/null | grep -q libopenjp2; then   # glymur needs OpenJPEG >= 2.4
  (apt-get install -y libopenjp2-7 || sudo apt-get install -y libopenjp2-7) >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
.venv/bin/python -m core.runner --quiet

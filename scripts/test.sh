#!/usr/bin/env bash
# The test command: set-up if needed (idempotent), then the whole suite.
# pytest's exit code 5 (no tests collected) fails too.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"

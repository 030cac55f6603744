#!/usr/bin/env bash
# Set up the agent (no torch) in .venv and run the end-to-end demo.
#   bash scripts/demo.sh [edge-agent demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
exec .venv/bin/edge-agent demo "$@"

#!/usr/bin/env bash
# Set up the agent (no torch) in .venv and run the end-to-end demo (no broker to install:
# Mosquitto if present, else the embedded amqtt broker, else the offline demo).
#   bash scripts/demo.sh [edge-agent demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# [demo] brings amqtt, the embedded broker used when Mosquitto is not installed; without
# it (no index reachable) the plain install still gives the offline demo.
.venv/bin/python -m pip install -q -e ".[demo]" || .venv/bin/python -m pip install -q -e .
exec .venv/bin/edge-agent demo "$@"

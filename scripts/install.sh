#!/usr/bin/env bash
# Idempotent install into ./.venv (or $CNR_FAST_VENV): torch first (it comes from local disk on the
# project machines), then the project, editable, with its dev extras. Safe to rerun: a second run
# only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CNR_FAST_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q --no-build-isolation -e '.[dev]'

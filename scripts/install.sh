#!/usr/bin/env bash
# Idempotent install into ./.venv (or $CNR_FAST_VENV): torch first (it comes from local disk on the
# project machines), then the project, editable, with its dev extras and C++ extension.
# A second run takes seconds: when the venv has torch and cnr_fast and the build inputs (setup.py,
# pyproject.toml, CMakeLists.txt, csrc/) are unchanged since the last install, it says
# so and does nothing. Python sources need no reinstall (editable). Force a full run with
# CNR_FAST_REINSTALL=1 (or delete .venv). `install.sh --check` only says whether it is up to date (exit 0 / 1).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CNR_FAST_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.cnr-fast-install-stamp"

build_inputs_hash() {
  { echo "strict=${CNR_FAST_STRICT_BUILD:-0} cuda=${CNR_FAST_CUDA:-auto}"
    find setup.py pyproject.toml CMakeLists.txt csrc -type f 2>/dev/null | LC_ALL=C sort \
      | xargs sha256sum; } | sha256sum | cut -d' ' -f1
}

want=$(build_inputs_hash)
up_to_date() {
  [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('torch', 'torchvision', 'cnr_fast')))" 2>/dev/null
}
if [ "${1:-}" = "--check" ]; then
  if up_to_date; then echo "install.sh: $VENV is up to date"; exit 0; fi
  echo "install.sh: $VENV needs an install (missing, or build inputs changed)"; exit 1
fi
if [ "${CNR_FAST_REINSTALL:-0}" != 1 ] && up_to_date; then
  echo "install.sh: $VENV is up to date (build inputs unchanged since the last install); nothing to do." \
       "CNR_FAST_REINSTALL=1 forces a full install." >&2
  exit 0
fi
rm -f "$STAMP"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
if ! "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')))" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
"$VENV/bin/python" -m pip install -q --no-build-isolation -e '.[dev]'
echo "$want" > "$STAMP"
echo "install.sh: installed into $VENV" >&2

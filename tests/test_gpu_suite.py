"""bench/gpu_suite.sh without a GPU: each of its two calls fits the device tool's 600 s with margin (the
sum of its step timeouts plus each step's kill grace <= 540 s), the Triton tests run first and
without -x, and the CUDA C++ test it runs compiles (and, without a device, reports itself skipped)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.sh"
LIMIT_S = 540


def _dry_run(*args: str) -> str:
    r = subprocess.run(["bash", str(SUITE), "--dry-run", *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHON": sys.executable}, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _steps(out: str) -> list[tuple[str, int, str]]:
    return [(m[1], int(m[2]), m[3]) for m in re.finditer(r"^\[dry-run\] (\S+): \(timeout (\d+)s\) (.*)$", out, re.MULTILINE)]


def _kill_grace() -> int:
    return int(re.search(r"^KILL_S=(\d+)", SUITE.read_text(), re.MULTILINE)[1])


@pytest.mark.parametrize("call", ["1", "2"])
def test_each_call_fits_the_budget(call):
    steps = _steps(_dry_run(call))
    assert steps, "no steps in the plan"
    total = sum(t + _kill_grace() for _, t, _ in steps)
    assert total <= LIMIT_S, f"call {call}: {total} s of step timeouts > {LIMIT_S} s: {steps}"
    assert re.search(rf"budget call {call}: {total} s", _dry_run(call)), "the script's own sum differs"


def test_call_contents():
    one, two = ({n: cmd for n, _, cmd in _steps(_dry_run(c))} for c in ("1", "2"))
    names1 = list(one)
    assert names1.index("build") < names1.index("gpu_tests") < names1.index("gpu_tests_native")
    assert "cpp_tests" in one
    for name in ("gpu_tests", "gpu_tests_native"):
        assert " -x" not in one[name] and " -rs" in one[name]
    assert "test_triton" in one["gpu_tests"] and "test_cka_native" in one["gpu_tests_native"]
    for name in ("bench_class_means", "bench_ops", "bench_knn", "bench_e2e", "bench_compile", "vit_b16", "bench_cka"):
        assert name in two, name
    # the headline command as the design card runs it: ViT-B/16 compiled, with AMP
    assert "--arch vit_b16" in two["vit_b16"] and "--compile" in two["vit_b16"] and "--amp" in two["vit_b16"]
    assert "build" not in two  # call 2 carries call 1's library or builds it in the background
    assert "mlxtend" not in two["vit_b16"]


def test_both_calls_in_one_dry_run():
    out = _dry_run()
    assert "budget call 1:" in out and "budget call 2:" in out


@pytest.mark.slow
def test_cpp_tests_step_compiles_the_cuda_test(tmp_path):
    """The commands of the suite's cpp_tests step, on this machine: the core test passes, the CUDA test
    compiles with nvcc and exits 77 (skipped) without a device, 0 with one."""
    src = SUITE.read_text()
    assert "csrc/tests/test_cka_cuda.cu" in src and "csrc/tests/test_cka_core.cpp" in src
    if shutil.which("g++") is None:
        pytest.skip("g++ not on PATH")
    core = tmp_path / "core"
    subprocess.run(["g++", "-std=c++17", "-O2", "-fopenmp", "-Icsrc", "csrc/tests/test_cka_core.cpp", "-o", str(core)],
                   cwd=ROOT, check=True, timeout=300)
    assert subprocess.run([str(core)], check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300).returncode == 0
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH")
    exe = tmp_path / "cuda"
    subprocess.run(["nvcc", "-std=c++17", "-O2", "-arch=sm_90", "-Icsrc", "-Xcompiler", "-fopenmp",
                    "csrc/tests/test_cka_cuda.cu", "-o", str(exe), "-lgomp"], cwd=ROOT, check=True, timeout=600)
    rc = subprocess.run([str(exe)], check=False, timeout=300).returncode
    assert rc in (0, 77), rc

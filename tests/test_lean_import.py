"""`import cnr_fast` (and its ops) never initialises CUDA, imports triton or faiss, or loads _C."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lean_import():
    code = (
        "import sys, torch\n"
        # torchvision itself imports triton (torch 2.14), so models/cli cannot be lean; the package
        # root and the ops a pipeline imports are.
        "import cnr_fast, cnr_fast.ops, cnr_fast.ops.backend, cnr_fast.config, cnr_fast.runs\n"
        "bad = [m for m in ('triton', 'faiss', 'cnr_fast._C', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_gpu_suite_dry_run():
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--dry-run"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("build", "gpu_tests", "bench_class_means", "bench_cka", "bench_knn", "bench_e2e", "vit_b16"):
        assert f"[dry-run] {step}:" in r.stdout


def test_bench_e2e_small_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.bench_e2e", "--small", "--device", "cpu", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    res = json.loads((tmp_path / "e2e_small_cpu.json").read_text())
    run = res["runs"][0]
    assert run["total_s"] >= run["detect_s"] + run["synthesize_s"] + run["reset_s"] - 1e-6
    assert res["machine"]["git_sha"] is None or len(res["machine"]["git_sha"]) == 40

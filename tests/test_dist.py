"""torchrun data parallelism on CPU (gloo, 2 processes) against one process (issue #10).

1. The pieces (tests/dist_worker.py, two ranks joined by hand the way torchrun does): `train.fit` on
   a BatchNorm-free net with an uneven last batch, detection's class means, sharded latent
   optimisation (7 codes over 2 ranks), the audit's feature pass and SSD's importances equal the
   one-process values to float32 reduction order (measured max differences: see the tolerances).
2. `torchrun --nproc_per_node 2 -m cnr_fast.cli unlearn` on a tiny config: one run directory,
   `world_size: 2` in results.json, no state folder left, and forget / retain accuracy within the
   measured tolerance of the one-process run (BatchNorm normalises each rank's half batch, so the
   runs are not bit-identical; see cnr_fast.dist).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CNR_FAST_TEST_KILL_AT"):
        if k not in extra:
            env.pop(k, None)
    return env


def _worker_module():
    spec = importlib.util.spec_from_file_location("dist_worker", HERE / "dist_worker.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _close(a, b, atol, rtol=1e-5, what=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], atol, rtol, f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, atol, rtol, f"{what}[{i}]")
    else:
        assert a.shape == b.shape, (what, a.shape, b.shape)
        torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def test_two_gloo_ranks_match_one_process(tmp_path):
    port = str(_free_port())
    out = tmp_path / "two.pt"
    procs = [subprocess.Popen([sys.executable, str(HERE / "dist_worker.py"), str(out)],
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    two = torch.load(out, weights_only=True)
    assert two["world_size"] == 2
    one = _worker_module().compute()  # this process: no torchrun environment, world size 1

    # identical weights after 2 epochs of Adam on averaged gradients (5 batches, the last of 2 rows)
    _close(two["fit_weights"], one["fit_weights"], atol=1e-5, what="fit")
    _close(two["fit_history"], one["fit_history"], atol=1e-5, what="fit history")
    _close(two["means"], one["means"], atol=1e-5, what="class means")
    assert torch.equal(two["counts"], one["counts"])
    _close(two["latent_images"], one["latent_images"], atol=1e-5, what="latents")  # shares of 4 and 3 codes
    _close(two["latent_log"], one["latent_log"], atol=1e-5, what="latent log")
    assert torch.equal(two["latent_hist"], one["latent_hist"])
    for key in ("vec", "full"):
        _close(two[key], one[key], atol=1e-6, what=key)  # same rows, same order
    _close(two["logits"], one["logits"], atol=1e-6, what="logits")
    _close(two["sums"], one["sums"], atol=1e-4, what="audit class sums")
    assert torch.equal(two["sum_counts"], one["sum_counts"])
    _close(two["ssd"], one["ssd"], atol=1e-9, rtol=1e-4, what="ssd importances")


TINY = ["--dataset", "digits", "--image-size", "16", "--train-epochs", "3", "--gan-epochs", "2", "--synth-steps", "3",
        "--synth-batch", "8", "--reset-epochs", "2", "--stabilize-epochs", "1", "--audit", "off", "--quiet"]


def test_torchrun_unlearn_two_processes(tmp_path):
    cache = str(tmp_path / "cache")
    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "cnr_fast.cli", "unlearn", "--cache-dir", cache + "1", "--out", str(one),
                        *TINY], check=False, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "cnr_fast.cli", "unlearn", "--cache-dir", cache + "2", "--out", str(two), *TINY],
                       check=False, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((two / "results.json").read_text())
    ref = json.loads((one / "results.json").read_text())
    assert res["world_size"] == 2 and ref["world_size"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache1", "cache2", "one", "two"]  # no state, no staging
    assert len(list((Path(cache + "2") / "models").glob("original-*.pt"))) == 1  # one cache entry, by rank 0
    for model in ("original", "unlearned"):
        for key in ("forget_acc", "retain_acc"):
            a, b = res["metrics"][model][key], ref["metrics"][model][key]
            assert abs(a - b) <= TOLERANCE[model][key], (model, key, a, b)


# `python -m bench.bench_ddp --part agree --seeds 0 1 2 3 4` (bench/results/ddp_agree_cpu.json, this
# config, AMD EPYC, torch 2.14): |2 processes - 1 process| at most 0.114 / 0.071 (forget / retain) for
# the original (3 epochs on 1,300 images: BatchNorm's per-rank half batches move an unsettled model;
# seed 1 is the outlier, the others <= 0.025) and 0.029 / 0.015 for the unlearned model. The bounds
# leave room for another CPU's rounding; a run that does not train in parallel (each rank on the same
# rows, gradients not averaged, ranks out of step) is off by far more.
TOLERANCE = {"original": {"forget_acc": 0.15, "retain_acc": 0.10},
             "unlearned": {"forget_acc": 0.08, "retain_acc": 0.05}}


def test_other_verbs_refuse_torchrun(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnr_fast.cli", "compare", "--out", str(tmp_path / "c")],
                       env=_env(WORLD_SIZE="2", RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1"),
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "runs in one process" in r.stderr and "--merge" in r.stderr
    assert not (tmp_path / "c").exists()

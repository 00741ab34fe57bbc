"""torchrun data parallelism on CPU: agreement with one process, and scaling per stage (issue #10).

Every run is `cnr-fast unlearn` as a user starts it, with a cold model cache of its own.

1. Agreement: a tiny config (digits 16 px, 3 epochs, GAN 2 epochs, 3 latent steps, B = 8, reset 2 +
   1 epochs, no audit) for each seed in --seeds, one process and `torchrun --nproc_per_node 2`,
   the same global batch. Differences in forget / retain accuracy of the original (trained under
   DDP too) and of the unlearned model: the tolerance tests/test_dist.py uses comes from these.
2. Scaling: a shortened default run (mnist5k, the default model; --scale-args below) three ways:
   one process with one thread, one process with two threads (what a user of a 2-core machine
   runs without torchrun) and two processes with one thread each. Per stage (original training,
   detect, synthesize, reset, audit, total) the wall seconds, the speed-up of 2 processes over each
   one-process run and the parallel efficiency T(1 proc, 1 thread) / (2 x T(2 procs)).

    python -m bench.bench_ddp                 # both parts, ~15 min on 2 quiet cores
    python -m bench.bench_ddp --part agree --seeds 0
    python -m bench.bench_ddp --quick         # seconds-scale smoke run (tiny config for both parts)

Writes bench/results/ddp_cpu.json (`--part agree`: ddp_agree_cpu.json; machine, CPU model and load
recorded). Quiet machine needed for part 2: the numbers are wall times of processes that share 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--dataset", "digits", "--image-size", "16", "--train-epochs", "3", "--gan-epochs", "2", "--synth-steps", "3",
        "--synth-batch", "8", "--reset-epochs", "2", "--stabilize-epochs", "1", "--audit", "off"]
SCALE = ["--train-epochs", "2", "--gan-epochs", "10", "--synth-steps", "100", "--reset-epochs", "2",
         "--stabilize-epochs", "1", "--audit", "fast", "--retrained", "off"]
STAGES = ("original_train", "detect", "synthesize", "reset", "audit", "total")


def _env(threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_unlearn(args: list[str], *, procs: int, threads: int, work: Path, name: str) -> dict:
    out, cache = work / name, work / f"{name}-cache"
    head = [sys.executable, "-m", "cnr_fast.cli"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m",
         "cnr_fast.cli"]
    t0 = time.perf_counter()
    r = subprocess.run([*head, "unlearn", "--quiet", "--cache-dir", str(cache), "--out", str(out), *args],
                       env=_env(threads), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    res = json.loads((out / "results.json").read_text())
    from cnr_fast.runs import load_checkpoint

    _, meta = load_checkpoint(res["original_checkpoint"])
    t = res["timings_s"]
    times = {"original_train": float(meta["train_time_s"]), **{k: float(t.get(k, 0.0)) for k in STAGES[1:]}}
    times["total"] = float(t["total"])  # the unlearn command's own total, original training included
    return {"world_size": res["world_size"], "wall_s": wall, "stages_s": times,
            "metrics": {m: {k: res["metrics"][m][k] for k in ("forget_acc", "retain_acc")}
                        for m in ("original", "unlearned")}}


def agree(seeds, work: Path) -> dict:
    rows = []
    for s in seeds:
        one = run_unlearn([*TINY, "--seed", str(s)], procs=1, threads=1, work=work, name=f"agree1-{s}")
        two = run_unlearn([*TINY, "--seed", str(s)], procs=2, threads=1, work=work, name=f"agree2-{s}")
        diff = {m: {k: two["metrics"][m][k] - one["metrics"][m][k] for k in ("forget_acc", "retain_acc")}
                for m in ("original", "unlearned")}
        rows.append({"seed": s, "one": one["metrics"], "two": two["metrics"], "diff": diff})
        print(f"agree seed {s}: " + ", ".join(f"{m} {k} {v:+.4f}" for m, d in diff.items() for k, v in d.items()),
              flush=True)
    worst = {k: max(abs(r["diff"][m][k]) for r in rows for m in ("original", "unlearned"))
             for k in ("forget_acc", "retain_acc")}
    return {"config": TINY, "rows": rows, "max_abs_diff": worst}


def scaling(args_list: list[str], work: Path) -> dict:
    runs = {
        "1proc_1thread": run_unlearn(args_list, procs=1, threads=1, work=work, name="scale-1p1t"),
        "1proc_2threads": run_unlearn(args_list, procs=1, threads=2, work=work, name="scale-1p2t"),
        "2proc_1thread": run_unlearn(args_list, procs=2, threads=1, work=work, name="scale-2p1t"),
    }
    two = runs["2proc_1thread"]["stages_s"]
    per_stage = {}
    for st in STAGES:
        a, b = runs["1proc_1thread"]["stages_s"][st], runs["1proc_2threads"]["stages_s"][st]
        per_stage[st] = {"1proc_1thread_s": a, "1proc_2threads_s": b, "2proc_1thread_s": two[st],
                         "speedup_vs_1proc_1thread": a / two[st] if two[st] else None,
                         "speedup_vs_1proc_2threads": b / two[st] if two[st] else None,
                         "efficiency_2proc": a / (2 * two[st]) if two[st] else None}
        print(f"scaling {st:15s} 1p1t {a:7.1f}s  1p2t {b:7.1f}s  2p1t {two[st]:7.1f}s  "
              f"speed-up {per_stage[st]['speedup_vs_1proc_1thread'] or 0:.2f}x / "
              f"{per_stage[st]['speedup_vs_1proc_2threads'] or 0:.2f}x", flush=True)
    return {"config": args_list, "runs": runs, "per_stage": per_stage}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["agree", "scaling", "both"], default="both")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="tiny config everywhere, one seed (smoke test)")
    p.add_argument("--out", default=None, help="output folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    args = p.parse_args(argv)
    from bench.harness import finish

    payload = {"note": "wall seconds of cnr-fast unlearn on CPU with gloo; 2 processes share the machine's cores"}
    with tempfile.TemporaryDirectory(prefix="cnr-ddp-") as tmp:
        work = Path(tmp)
        if args.part in ("agree", "both"):
            payload["agreement"] = agree(args.seeds[:1] if args.quick else args.seeds, work)
        if args.part in ("scaling", "both"):
            payload["scaling"] = scaling(TINY if args.quick else ["--dataset", "mnist5k", *SCALE], work)
    name = "ddp_agree_cpu" if args.part == "agree" else "ddp_cpu"  # agreement alone runs under any load
    finish(name if not args.quick else name.replace("_cpu", "_cpu_quick"), args, payload, "cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())

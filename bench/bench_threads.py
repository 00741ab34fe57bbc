"""Which torch thread count should `cnr-fast` use by default? Whole `cnr-fast unlearn` runs timed under
each thread policy, quiet and beside one busy process (a pure-Python spin loop, as a neighbour's
job or a CI runner's other work keeps one core busy).

Policies: `--threads 2` (one per core, torch's own default on these machines), `--threads 1`,
`--threads auto` (threads.py: the cores not busy at start), and 2 threads with
OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning while they wait). Every run is a
separate process; each round runs every (condition, policy) pair once, the policies in an order
rotated by the round, so a drift of the machine's speed falls on every policy alike. The file keeps
every run's wall time, the load before it, and per condition the median over rounds and the ratio
of each policy's median to the best policy's median there.

The workload is the default run's stages (the original, its references, CNR with the DCGAN, latent
optimisation, reset and stabilisation, the fast audit) at a reduced budget so that the whole
measurement fits a session: `--workload` gives its flags; the references are trained once per
thread count in a warm-up (not timed) and then read from a private cache, as in a repeated run.

    python -m bench.bench_threads --rounds 2
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import finish

WORKLOAD = ("--train-epochs 2 --gan-epochs 5 --synth-steps 50 --reset-epochs 2 --stabilize-epochs 1 "
            "--reset-lr 1e-3 --audit fast")
POLICIES = {
    "threads=2": (["--threads", "2"], {}),
    "threads=1": (["--threads", "1"], {}),
    "auto": (["--threads", "auto"], {}),
    "threads=2-passive": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    return {**env, **extra}


def run_once(workload: list[str], flags: list[str], extra_env: dict, cache: str, out: str) -> dict:
    cmd = [sys.executable, "-m", "cnr_fast.cli", "unlearn", *workload, *flags, "--cache-dir", cache,
           "--out", out, "--restart", "--quiet"]
    load = list(os.getloadavg())
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(extra_env), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"workload failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    import json

    res = json.loads((Path(out) / "results.json").read_text())
    prov = res["provenance"]
    return {"wall_s": wall, "load_before": load, "torch_threads": prov["torch_threads"],
            "threads_policy": prov.get("threads_policy"), "forget_acc": res["metrics"]["unlearned"]["forget_acc"],
            "retain_acc": res["metrics"]["unlearned"]["retain_acc"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workload", default=WORKLOAD, help=f"flags of `cnr-fast unlearn` (default: {WORKLOAD})")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--out", default=None)
    p.add_argument("--name", default="threads_cpu")
    p.add_argument("--cache-dir", default=None, help="model cache to keep between invocations (default: a new "
                                                     "temporary one)")
    args = p.parse_args(argv)
    workload = shlex.split(args.workload)
    policies = [s for s in args.policies.split(",") if s]
    unknown = [s for s in policies if s not in POLICIES]
    if unknown or args.rounds < 1:
        p.error(f"unknown policies {unknown} (choose from {', '.join(POLICIES)}) or --rounds < 1")
    tmp = tempfile.mkdtemp(prefix="bench-threads-")
    cache, out = args.cache_dir or os.path.join(tmp, "cache"), os.path.join(tmp, "run")
    for n in ("1", "2"):  # the references for both thread counts, untimed
        print(f"warm-up: --threads {n}", flush=True)
        run_once(workload, ["--threads", n], {}, cache, out)
    runs: dict = {"quiet": {s: [] for s in policies}, "busy": {s: [] for s in policies}}
    for i in range(args.rounds):
        for condition in ("quiet", "busy"):
            spinner = None
            if condition == "busy":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(2.0)  # let it be seen as busy
            try:
                order = policies[i % len(policies):] + policies[:i % len(policies)]
                for s in order:
                    flags, env = POLICIES[s]
                    r = run_once(workload, flags, env, cache, out)
                    runs[condition][s].append(r)
                    print(f"round {i + 1} {condition} {s}: {r['wall_s']:.1f}s ({r['torch_threads']} threads; "
                          f"load {r['load_before'][0]:.2f})", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    summary = {}
    for condition, per in runs.items():
        med = {s: statistics.median(r["wall_s"] for r in rs) for s, rs in per.items()}
        best = min(med.values())
        summary[condition] = {s: {"median_s": m, "vs_best": m / best} for s, m in med.items()}
    for condition, per in summary.items():
        print(condition + ": " + ", ".join(f"{s} {v['median_s']:.1f}s ({v['vs_best']:.2f}x best)"
                                           for s, v in per.items()))
    finish(args.name, args, {"workload": workload, "runs": runs, "summary": summary,
                             "cpu_count": os.cpu_count()}, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The pre-registered ten-seed comparison (bench/preregistration.md): run it, merge it, analyse it.

    python bench/prereg10.py run [--workers 2]   # every seed not yet done, one process per seed at 1 thread;
                                                 # rerun to resume (each seed continues from its OUT.state/)
    python bench/prereg10.py status              # which seeds are done
    python bench/prereg10.py merge               # the done seeds -> bench/results/runs/prereg10_mnist5k/
    python bench/prereg10.py analyse             # the registered analysis -> bench/results/prereg10_analysis.json

The analysis reads the merged file alone and computes exactly what the registration names; nothing in it
is chosen after seeing the data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
WORK = os.path.join(ROOT, "bench", ".prereg")
OUT = os.path.join(ROOT, "bench", "results", "runs", "prereg10_mnist5k")
ANALYSIS = os.path.join(ROOT, "bench", "results", "prereg10_analysis.json")

SEEDS = tuple(range(10))
ATTACK_SEEDS = (0, 1, 2)  # the Table 10 attacks and U-LiRA / KLOM over 8 shadow pairs
ULIRA_PAIRS = 8
METHODS = ("cnr", "cnr-real", "rl", "ssd", "scrub", "salun", "neggrad+", "l1-sparse", "bad-teacher", "unsir", "jit",
           "ssd-lf", "roft", "rfs", "lm")
PRIMARY = ("forget_acc", "retain_acc", "cka_neg.L4", "fewshot_probe_acc.1", "fewshot_probe_acc.5", "gradcam_overlap",
           "ulira_excess", "klom_excess")
# the per-example attacks: "vs retrained" is the method's value minus the null's in its place (0 for retraining)
# (KLOM: the method's first K/2 shadows against the last K/2 retrained ones, minus the first K/2 retrained
# against the same; audit/klom.shadow_summary)
EXCESS = {"ulira_excess": ("ulira_auc", "ulira_null_auc"), "klom_excess": ("klom_half_forget", "klom_null_forget")}
ALPHA = 0.05


def seed_dir(seed: int) -> str:
    return os.path.join(WORK, f"s{seed}")


def done(seed: int) -> bool:
    return os.path.exists(os.path.join(seed_dir(seed), "compare.json"))


def command(seed: int) -> list[str]:
    cmd = [os.path.join(ROOT, ".venv", "bin", "cnr-fast"), "compare", "--methods", ",".join(METHODS),
           "--seed", str(seed), "--seeds", "1", "--threads", "1", "--cache-dir", os.path.join(WORK, "cache"),
           "--out", seed_dir(seed)]
    if seed in ATTACK_SEEDS:
        cmd += ["--attacks", "--ulira-pairs", str(ULIRA_PAIRS)]
    return cmd


def run(workers: int) -> int:
    os.makedirs(WORK, exist_ok=True)
    todo = [s for s in SEEDS if not done(s)]
    print(f"prereg10: seeds to run {todo}", file=sys.stderr)

    def one(seed):
        with open(os.path.join(WORK, f"s{seed}.log"), "a") as log:
            return seed, subprocess.call(command(seed), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    with ThreadPoolExecutor(workers) as pool:
        for seed, rc in pool.map(one, todo):
            print(f"prereg10: seed {seed} exit {rc}", file=sys.stderr)
    return 0


def merge() -> int:
    have = [s for s in SEEDS if done(s)]
    if not have:
        print("prereg10: no seed done yet", file=sys.stderr)
        return 2
    files = ",".join(os.path.join(seed_dir(s), "compare.json") for s in have)
    return subprocess.call([os.path.join(ROOT, ".venv", "bin", "cnr-fast"), "compare", "--merge", files,
                            "--out", OUT], cwd=ROOT)


def with_excess(per_seed: list[dict]) -> list[dict]:
    """Each seed's metrics with the registered excess measures added (method minus the null in its place;
    0 for the retrained model by construction); absent where the seed has no U-LiRA / KLOM."""
    out = []
    for ps in per_seed:
        ps = {n: dict(v) for n, v in ps.items()}
        for key, (val, null) in EXCESS.items():
            have = [n for n, v in ps.items() if val in v and null in v]
            for n in have:
                ps[n][key] = ps[n][val] - ps[n][null]
            if have:
                ps.setdefault("retrained", {})[key] = 0.0
        out.append(ps)
    return out


def contrasts(methods: list[str]) -> list[tuple[str, str]]:
    return [(m, "retrained") for m in methods] + [("cnr", m) for m in methods if m != "cnr"]


def analyse(result: dict) -> dict:
    """The registered analysis of a merged compare result (bench/preregistration.md)."""
    import numpy as np
    from scipy import stats as st

    from cnr_fast.experiments.stats import holm, pairwise

    methods = [m for m in METHODS if m in result["per_seed_times"]]
    per_seed = with_excess(result["per_seed"])
    pairs = contrasts(methods)
    table = {}
    for key in PRIMARY:
        seeds = [i for i, ps in enumerate(per_seed) if key in ps.get("retrained", {})]
        rows_in = [per_seed[i] for i in seeds]
        if not rows_in:
            table[key] = {"seeds": [], "rows": [], "note": "no seed reports it"}
            continue
        usable = [(a, b) for a, b in pairs if all(key in ps.get(a, {}) and key in ps.get(b, {}) for ps in rows_in)]
        rows = pairwise(rows_in, [], [key], alpha=ALPHA, pairs=usable).get(key, [])
        for r in rows:
            d = np.asarray([ps[r["a"]][key] - ps[r["b"]][key] for ps in rows_in], dtype=np.float64)
            if len(d) >= 2 and d.std(ddof=1) > 0:
                half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                r["ci95"] = [float(d.mean() - half), float(d.mean() + half)]
            else:
                r["ci95"] = [float(d.mean()), float(d.mean())] if len(d) >= 2 else None
        table[key] = {"seeds": [result["seeds"][i] for i in seeds], "family_size": len(rows), "rows": rows,
                      "dropped": [f"{a} - {b}" for a, b in pairs if (a, b) not in usable]}
    # sensitivity: Holm over every contrast of every primary measure together
    flat = {(k, i): r["p"] for k, t in table.items() for i, r in enumerate(t["rows"])}
    adjusted = holm(flat)
    for (k, i), p in adjusted.items():
        r = table[k]["rows"][i]
        r["p_holm_all"] = p
        constant = r["reading"].startswith("decided (the same")  # no p: the difference itself decides
        r["decided_all"] = bool(constant or (p is not None and p < ALPHA))
    return {"registration": "bench/preregistration.md", "source": os.path.relpath(os.path.join(OUT, "compare.json"), ROOT),
            "seeds": result["seeds"], "methods": methods, "alpha": ALPHA, "primary": list(PRIMARY),
            "family_size_all": len(flat), "measures": table}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("run", "status", "merge", "analyse"))
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    if a.what == "run":
        return run(a.workers)
    if a.what == "status":
        print({s: "done" if done(s) else ("started" if os.path.isdir(seed_dir(s) + ".state") or os.path.isdir(seed_dir(s))
                                          else "not started") for s in SEEDS})
        return 0
    if a.what == "merge":
        return merge()
    with open(os.path.join(OUT, "compare.json")) as f:
        out = analyse(json.load(f))
    tmp = ANALYSIS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, ANALYSIS)
    print(f"wrote {ANALYSIS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

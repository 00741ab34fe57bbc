"""A digest of what the drivers compute on a tiny configuration, to show that a refactor changed no result.

    python scripts/results_digest.py --out digest.json    # run from a checkout; 1 thread, CPU

Runs a tiny `compare` (every default method, 1 seed), a tiny `ablate` (2 variants) and a tiny
`continual` (2 rounds) on the embedded digits with a fresh cache, and writes the sha256 of each
result's per-seed metrics and validation choices (timings and provenance left out) plus the values
themselves. Two checkouts with equal digests computed the same numbers, bit for bit, on this machine and
thread count. `val_*` keys are left out of `continual` (it gained them with the shared per-seed runner).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from cnr_fast import experiments as E
    from cnr_fast.config import RunConfig

    tiny = RunConfig().replace(data={"dataset": "digits", "image_size": 8}, train={"epochs": 1},
                               synth={"gan_epochs": 1, "steps": 2, "batch": 4},
                               reset={"epochs": 1, "stabilize_epochs": 0},
                               baseline={"epochs": 1, "stabilize_epochs": 0})
    methods = ["cnr", "cnr-real", "rl", "ssd", "scrub", "salun", "rfs", "roft", "gau", "kdu", "lm", "cnr-raw",
               "cnr-paper"]
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        torch.manual_seed(tiny.seed)
        c = E.compare(tiny, methods, seeds=1, device="cpu", cache=cache, quiet=True)
        out["compare"] = {"per_seed": c["per_seed"], "per_seed_choices": c["per_seed_choices"],
                          "per_seed_originals": c["per_seed_originals"], "verdict_keys": sorted(c.get("separation", c.get("verdicts", {})))}
        torch.manual_seed(tiny.seed)
        a = E.ablate(tiny, ["relabel-step", "b32"], seeds=1, device="cpu", cache=cache, quiet=True)
        out["ablate"] = {"per_seed": a["per_seed"]}
        torch.manual_seed(tiny.seed)
        k = E.continual(tiny, ["cnr", "rl", "lm"], seeds=1, order=(2, 5), device="cpu", cache=cache, quiet=True)
        out["continual"] = {"rounds": [[{n: {m: v for m, v in vals.items() if not m.startswith("val_")}
                                         for n, vals in ps.items()} for ps in rd["per_seed"]] for rd in k["rounds"]]}
    report = {part: {"sha256": _digest(v)} for part, v in out.items()}
    with open(args.out, "w") as fh:
        json.dump({"digests": report, "values": out}, fh, indent=1, sort_keys=True)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

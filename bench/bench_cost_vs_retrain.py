"""When is unlearning cheaper than retraining from scratch? Wall time of each method beside RFS.

Retraining costs (training epochs x data); CNR, cnr-real and SSD cost about the same whatever the
original's training took. This trains one original with `--train-epochs` epochs, then times RFS
(retraining with the original's recipe) and each method in `--rounds` interleaved rounds in this one
process: round i runs RFS and the methods in an order rotated by i, so a change of the machine's load
during the run falls on every method alike. Per round, ratio = RFS time / method time; the file keeps
every round's times, the load average before and after each, and the median ratio over rounds. Each
method runs as `cnr-fast unlearn` runs it, its validation search included (that search is part of what
a user pays). Forget and retain accuracy on the test split are recorded for every round.

    python -m bench.bench_cost_vs_retrain --train-epochs 40 --methods cnr,cnr-real,ssd --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.harness import finish


def rotated(names: list[str], i: int) -> list[str]:
    k = i % len(names)
    return names[k:] + names[:k]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-epochs", type=int, default=60)
    p.add_argument("--methods", default="cnr,cnr-real,ssd")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of RFS and every method")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None, help="JSON name (default cost_vs_retrain_e<epochs>_cpu)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")

    import torch

    from cnr_fast import experiments as E
    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset
    from cnr_fast.train import forget_retain_accuracy

    if args.threads:
        torch.set_num_threads(args.threads)
    data = {"dataset": args.dataset, **({"image_size": args.image_size} if args.image_size else {})}
    cfg = RunConfig(seed=args.seed).replace(data=data, train={"epochs": args.train_epochs})
    from cnr_fast.errors import UserError
    from cnr_fast.experiments.methods import check_names

    try:
        check_names([m for m in args.methods.split(",") if m])
    except UserError as e:
        p.error(str(e))
    ds = load_dataset(cfg.data)
    forget = list(cfg.data.forget)
    t0 = time.perf_counter()
    original, _ = E.train_reference("original", cfg, ds, args.device, quiet=True)
    training = {"time_s": time.perf_counter() - t0, **forget_retain_accuracy(original, ds.test, forget,
                                                                             device=args.device)}
    names = ["rfs", *[m for m in args.methods.split(",") if m and m != "rfs"]]
    rounds = []
    for i in range(args.rounds):
        row = {}
        for m in rotated(names, i):
            load_before = list(os.getloadavg())
            model, _, t, _ = E.unlearn_model(m, original, ds, cfg.replace(method=m), device=args.device, quiet=True)
            row[m] = {"time_s": t["unlearn"], "load_before": load_before, "load_after": list(os.getloadavg()),
                      **forget_retain_accuracy(model, ds.test, forget, device=args.device)}
            print(f"round {i + 1}/{args.rounds} {m}: {row[m]['time_s']:.1f}s forget {row[m]['forget_acc']:.3f} "
                  f"retain {row[m]['retain_acc']:.3f}", file=sys.stderr, flush=True)
        rounds.append({"order": rotated(names, i), "rows": row})
    per_round = {m: [r["rows"]["rfs"]["time_s"] / r["rows"][m]["time_s"] for r in rounds] for m in names if m != "rfs"}
    name = args.name or f"cost_vs_retrain_e{args.train_epochs}_{args.device.split(':')[0]}"
    finish(name, args, {
        "original_training": training, "rounds": rounds,
        "median_time_s": {m: statistics.median(r["rows"][m]["time_s"] for r in rounds) for m in names},
        "retrain_time_over_method_time": {m: statistics.median(v) for m, v in per_round.items()},
        "retrain_time_over_method_time_per_round": per_round,
        "note": "ratio > 1: the method is that many times cheaper than retraining; per round, RFS and the method "
                "timed in the same process, interleaved (order rotated each round); the ratio is the median over "
                "rounds"}, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""When is unlearning cheaper than retraining from scratch? Wall time of each method beside RFS.

Retraining costs (training epochs x data); CNR, RL and SSD cost the same whatever the original's
training took. This trains one original with `--train-epochs` epochs, then times, in the same run and
on the same machine, RFS (retraining with the original's recipe) and each method, and records forget
and retain accuracy on the test split, so the ratio `rfs time / method time` is measured, not assumed.

    python -m bench.bench_cost_vs_retrain --train-epochs 60 --methods cnr,rl,ssd --out bench/results/runs
"""

from __future__ import annotations

import argparse
import time

from bench.harness import finish


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-epochs", type=int, default=60)
    p.add_argument("--methods", default="cnr,rl,ssd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None, help="JSON name (default cost_vs_retrain_e<epochs>_cpu)")
    args = p.parse_args(argv)

    import torch

    from cnr_fast import experiments as E
    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset
    from cnr_fast.train import forget_retain_accuracy

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(seed=args.seed).replace(train={"epochs": args.train_epochs})
    ds = load_dataset(cfg.data)
    forget = list(cfg.data.forget)
    rows = {}
    t0 = time.perf_counter()
    original, meta = E.train_reference("original", cfg, ds, args.device, quiet=True)
    rows["original_training"] = {"time_s": time.perf_counter() - t0,
                                 **forget_retain_accuracy(original, ds.test, forget, device=args.device)}
    for m in ["rfs", *[m for m in args.methods.split(",") if m and m != "rfs"]]:
        model, _, t, _ = E.unlearn_model(m, original, ds, cfg.replace(method=m), device=args.device, quiet=True)
        rows[m] = {"time_s": t["unlearn"], **forget_retain_accuracy(model, ds.test, forget, device=args.device)}
        print(f"{m}: {rows[m]['time_s']:.1f}s forget {rows[m]['forget_acc']:.3f} retain {rows[m]['retain_acc']:.3f}",
              flush=True)
    rfs = rows["rfs"]["time_s"]
    ratios = {m: rfs / r["time_s"] for m, r in rows.items() if m not in ("original_training", "rfs")}
    name = args.name or f"cost_vs_retrain_e{args.train_epochs}_{args.device.split(':')[0]}"
    finish(name, args, {"rows": rows, "retrain_time_over_method_time": ratios,
                        "note": "ratio > 1: the method is that many times cheaper than retraining, same run"},
           args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""End-to-end CNR timing with per-stage wall times (paper hyper-parameters unless --small).

Synthetic data is enough for timing: `--scale cifar10` makes 50,000 uint8 images of 3x32x32 in 10
classes (forget class 0) and a ResNet-18 at width 1 (CIFAR stem). The original model is trained for
`--train-epochs` (default 1; its accuracy is irrelevant to the timing) before the timed stages.
Compile / autotune warm-up is excluded by running a tiny pipeline first.

    python -m bench.bench_e2e --device cuda --amp --out DIR         # the issue's GPU target (< 2 min)
    python -m bench.bench_e2e --small                                # CPU smoke test
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.harness import write_results
from cnr_fast.cnr.pipeline import run_cnr
from cnr_fast.config import RunConfig
from cnr_fast.data import Dataset, Split
from cnr_fast.models import build_model
from cnr_fast.train import resolve_device, train_classifier


def synthetic_dataset(n_train, n_test, classes, channels, size, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    # class-dependent mean so that detection has something to find
    def make(n):
        y = torch.arange(n) % classes
        base = torch.randint(0, 200, (n, channels, size, size), generator=g, dtype=torch.int32)
        x = (base + (y * (55 // max(classes // 10, 1)) % 56).view(-1, 1, 1, 1)).clamp(0, 255).to(torch.uint8)
        return Split(x, y)

    return Dataset("synthetic", make(n_train), make(n_test), classes, [str(c) for c in range(classes)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--small", action="store_true", help="tiny CPU-sized run (smoke test)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--train-epochs", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.small:
        ds = synthetic_dataset(2000, 400, 10, 1, 28)
        cfg = RunConfig().replace(model={"arch": args.arch, "width": 0.125}, amp=args.amp,
                                  synth={"gan_epochs": 2, "steps": 20}, reset={"epochs": 1, "stabilize_epochs": 1})
    else:
        ds = synthetic_dataset(50_000, 10_000, 10, 3, 32)
        cfg = RunConfig().replace(model={"arch": args.arch, "width": 1.0}, amp=args.amp,
                                  reset={"batch_size": 256}, train={"batch_size": 256})
    # a timing bench: one reset at the paper's step size (1e-4), not the validation search of a real run
    cfg = cfg.replace(data={"forget": (0,)}, train={"epochs": args.train_epochs}, device=str(device),
                      reset={"lr": 1e-4})
    torch.manual_seed(0)
    model = build_model(cfg.model.arch, ds.num_classes, ds.in_channels, ds.image_size, cfg.model.width).to(device)
    t0 = time.perf_counter()
    train_classifier(model, ds.train, cfg.train, device=device, amp=cfg.amp, quiet=True)
    train_s = time.perf_counter() - t0
    # warm-up: kernels, cuDNN autotune, Triton compilation (excluded from the timings)
    warm = cfg.replace(synth={"gan_epochs": 1, "steps": 2, "batch": 8}, reset={"epochs": 1, "stabilize_epochs": 0})
    small = Dataset("warm", ds.train.subset(slice(0, 512)), ds.test.subset(slice(0, 128)), ds.num_classes,
                    ds.class_names)
    run_cnr(model, small, [0], warm, device=device, quiet=True)
    runs = []
    for s in range(args.seeds):
        t0 = time.perf_counter()
        _, info = run_cnr(model, ds, [0], cfg.replace(seed=s), device=device, quiet=True)
        total = time.perf_counter() - t0
        runs.append({"seed": s, "total_s": total, **{f"{k}_s": v for k, v in info["timings_s"].items()},
                     "gan": info["synthesize"]["0"].get("updates")})
        print(f"seed {s}: total {total:.1f}s " + ", ".join(f"{k} {v:.1f}s" for k, v in info["timings_s"].items()))
    name = f"e2e_{'small' if args.small else 'cifar10'}_{device.type}{'_amp' if args.amp else ''}"
    path = write_results(name, {"config": cfg.to_dict(), "n_train": len(ds.train), "train_original_s": train_s,
                                "runs": runs}, args.out, device=str(device))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

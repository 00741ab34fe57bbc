"""`cnr-fast train`: train the original model (and the retrain-from-scratch reference)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import dist
from ..runs import check_out_dir, save_checkpoint, staged_dir, write_run_files
from ..references import obtain_reference
from .args import add_data_args, add_model_args, add_run_args, config_from_args
from .running import prepare_run

EXAMPLES = """examples:
  cnr-fast train --out models/                      # mnist5k, resnet18 width 0.125 -> models/original.pt
  cnr-fast train --retrained --forget 2 --out models/  # also the model retrained without class 2
  cnr-fast train --dataset cifar10 --data-root ~/data --width 1 --train-epochs 30 --device cuda --amp --out models/

Checkpoints hold the weights (loadable with torch.load(weights_only=True)) and metadata: arch,
width, dataset fingerprint, classes, seed, training config, test accuracies.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the original (and retrained reference) model",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for original.pt (and retrained.pt)")
    p.add_argument("--retrained", action="store_true", help="also train the reference without the forget classes")
    add_data_args(p)
    add_model_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_from_args(args)  # checks the arch too (args.check_config)
    out = Path(args.out)
    check_out_dir(out)  # before any training
    cfg, ds, device = prepare_run(cfg, args.quiet, getattr(args, "forget_names", None))
    summary, models = {}, {}
    for kind in ("original", "retrained") if args.retrained else ("original",):
        models[kind] = obtain_reference(kind, cfg, ds, device, args.cache_dir, args.quiet)[:2]
    if not dist.is_main():  # under torchrun rank 0 alone writes
        dist.barrier()
        return 0
    with staged_dir(out) as stage:  # all files or none (see runs.staged_dir)
        for kind, (model, meta) in models.items():
            save_checkpoint(stage / f"{kind}.pt", model, meta)
            summary[kind] = {"checkpoint": str(out / f"{kind}.pt"), **meta["test_accuracy"]}
        write_run_files(stage, {"train.json": {"config": cfg.to_dict(), "models": summary}})
    for kind, (_, meta) in models.items():
        print(f"{kind}: {out / f'{kind}.pt'}  forget acc {meta['test_accuracy']['forget_acc']:.4f}  "
              f"retain acc {meta['test_accuracy']['retain_acc']:.4f}")
    dist.barrier()
    return 0

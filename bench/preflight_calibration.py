"""What the input checks (cnr_fast/preflight.py) and the relearn attack read on a user's model.

The user's pipeline of tests/user_pipeline.py (torchvision resnet18, a plain loop, ImageNet-normalised
16 px digits in PNG folders, an original and a model retrained without "three"): for each way of
feeding it (as trained; [-1, 1] without --normalize; resized to other sizes) the first BatchNorm's
statistics against its running ones and the test accuracy over all classes; then the relearn attack
(audit/relearn.py) on the original and the retrained model, forget and retain accuracy after it.

    python -m bench.preflight_calibration --root /tmp/user --epochs 6   # trains there unless it holds the models
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.harness import finish

FEEDINGS = (("as trained", "imagenet", None), ("[-1, 1], no --normalize", "pm1", None),
            ("resized to 12 px", "imagenet", 12), ("resized to 24 px", "imagenet", 24),
            ("resized to 32 px", "imagenet", 32))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import user_pipeline as U

    from cnr_fast.audit.relearn import SHOTS, relearn
    from cnr_fast.config import DataConfig
    from cnr_fast.data import load_dataset
    from cnr_fast.models import model_from_checkpoint
    from cnr_fast.preflight import bn_mismatch, overall_accuracy
    from cnr_fast.train import forget_retain_accuracy

    root = Path(args.root)
    forget = 7  # "three" in ImageFolder's sorted order
    if not all((root / f"{n}.pt").is_file() for n in ("original", "retrained")):
        U.make(root, forget=forget, epochs=args.epochs)
    feedings, attack = [], []
    for label, norm, size in FEEDINGS:
        ds = load_dataset(DataConfig(dataset=f"imagefolder:{root / 'data'}", image_size=size, forget=(forget,)))
        for name in ("original", "retrained"):
            m, _ = model_from_checkpoint(root / f"{name}.pt", ds, "torchvision:resnet18", 1.0, {"normalize": norm})
            feedings.append({"feeding": label, "model": name, "first_batchnorm": bn_mismatch(m, ds.train, "cpu"),
                             "test_accuracy": overall_accuracy(m, ds.test, "cpu")})
            print(feedings[-1], flush=True)
            if label == "as trained":
                row = {"model": name, "before": forget_retain_accuracy(m, ds.test, [forget], device="cpu")}
                row["after"] = {str(n): relearn(m, ds.train, ds.test, [forget], n, device="cpu") for n in SHOTS}
                attack.append(row)
                print(row, flush=True)
    finish("preflight_calibration", args, {"feedings": feedings, "relearn": attack, "torch_threads":
                                           torch.get_num_threads()}, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())

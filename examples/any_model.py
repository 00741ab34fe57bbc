"""Your own model, trained by your own loop, unlearned and audited with cnr_fast.

    python examples/any_model.py                 # torchvision MobileNetV2 on sklearn's digits, ~2 min on 2 cores
    python examples/any_model.py --tiny          # the budget CI runs

1. A torchvision classifier is trained by a plain torch loop (nothing from cnr_fast): grey digits
   repeated to RGB, scaled to [-1, 1]. (A state_dict it saved loads on the CLI too:
   `cnr-fast unlearn --checkpoint plain.pt --model torchvision:mobilenet_v2 --model-arg width_mult=0.25`.)
2. `cnr_fast.unlearn` removes class 2 with CNR; the taps are found automatically (printed).
3. `cnr_fast.audit_model` compares the unlearned model with the original (and with a model retrained
   without class 2 by the same loop) on the test split, hidden states included.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn as nn
import torchvision
from sklearn.datasets import load_digits

import cnr_fast

FORGET = 2


def digits(size: int, seed: int = 0):
    """sklearn's digits as (N, 1, size, size) float images in [-1, 1]; a seeded 80/20 split."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2 - 1
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    cut = int(0.8 * len(y))
    return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]])


def train(model, x, y, epochs: int, seed: int = 0):
    """A plain training loop: what a user's pipeline does, nothing from cnr_fast."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rgb = x.expand(-1, 3, -1, -1)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(rgb[b]), y[b]).backward()
            opt.step()
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--method", default="cnr", help="any method of `cnr-fast ls`")
    ap.add_argument("--tiny", action="store_true", help="a CI budget: few epochs, a short CNR")
    ap.add_argument("--out", help="write the audit as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    epochs = 4 if args.tiny else args.epochs
    (x, y), (xt, yt) = digits(args.image_size)

    def build():
        return torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)

    original = train(build(), x, y, epochs)
    keep = y != FORGET
    retrained = train(build(), x[keep], y[keep], epochs, seed=1)

    config = None
    if args.tiny:
        config = cnr_fast.RunConfig().replace(
            synth={"gan_epochs": 5, "steps": 20, "batch": 16}, reset={"epochs": 3, "stabilize_epochs": 1, "lr": 1e-3},
            detect={"k": 4})
    data = {"train": (x[:, :1], y), "test": (xt[:, :1], yt)}  # grey: the input contract repeats it to RGB
    unlearned, info = cnr_fast.unlearn(original, data, forget=[FORGET], method=args.method, config=config,
                                       quiet=False)
    # `unlearned` is a MobileNetV2 like `original`, with the unlearned weights: fed as the original was
    report = cnr_fast.audit_model(unlearned, original=original, retrained=retrained, data=data, forget=[FORGET],
                                  relearn=not args.tiny, shots=(5,) if args.tiny else (1, 5, 25))
    print("taps audited:", ", ".join(report["settings"]["taps"]))
    m = report["metrics"]
    print(f"{'model':10s} {'forget_acc':>10s} {'retain_acc':>10s} {'probe L4':>9s} {'cka_neg L4':>10s}")
    for name in ("original", "unlearned", "retrained"):
        r = m[name]
        cka = r.get("cka_neg", {}).get("L4")  # the original's CKA with itself is not computed
        print(f"{name:10s} {r['forget_acc']:10.3f} {r['retain_acc']:10.3f} {r['probe_acc']['L4']:9.3f} "
              f"{'-' if cka is None else format(cka, '.3f'):>10s}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

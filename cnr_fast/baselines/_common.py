"""Pieces the fine-tuning baselines share (not CNR's: baselines do not borrow from cnr)."""

from __future__ import annotations

import copy
import itertools

import torch

from ..data import batches


def paired_batches(retain, forget, batch_size, gen, device):
    """Each epoch: one pass over retain batches, each paired with a forget batch (forget data cycled)."""

    def make(epoch):
        fb = itertools.cycle(list(batches(forget, batch_size, shuffle=True, generator=gen, device="cpu")))
        for x, y in batches(retain, batch_size, shuffle=True, generator=gen, device=device):
            xf, yf = next(fb)
            yield x, y, xf.to(device), yf.to(device)

    return make


def trainable_copy(original, device):
    model = copy.deepcopy(original).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def frozen_copy(original, device):
    """A teacher: an eval-mode copy of the original with no gradients."""
    model = copy.deepcopy(original).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def split_classes(ds, forget):
    retain = [c for c in range(ds.num_classes) if c not in forget]
    return ds.train.of_classes(retain), ds.train.of_classes(forget), retain


def generator(seed):
    return torch.Generator().manual_seed(seed)


def select_on_validation(candidates: dict, run_one, ds, forget, device, desc: str, quiet=False):
    """Run `run_one(value)` for each candidate; keep the model with the best validation score.

    score = val retain accuracy - val forget accuracy (the retrained model's forget accuracy is 0 for
    a forgotten class, so this rewards forgetting and keeping retain accuracy equally). Measured on
    ds.val only: the test split never takes part in a choice. Returns (model, info, table).
    """
    import sys

    from ..errors import UserError
    from ..train import forget_retain_accuracy

    if ds.val is None or len(ds.val) == 0:
        raise UserError(f"{desc}: choosing on validation needs a validation split; pass --val-fraction > 0 "
                        "or set the value in the config")
    best, table = None, {}
    for name, value in candidates.items():
        model, info = run_one(value)
        acc = forget_retain_accuracy(model, ds.val, forget, device=device)
        score = acc["retain_acc"] - acc["forget_acc"]
        table[str(name)] = {"val_forget_acc": acc["forget_acc"], "val_retain_acc": acc["retain_acc"], "score": score}
        if not quiet:
            print(f"  {desc}: {name}: val forget {acc['forget_acc']:.3f} retain {acc['retain_acc']:.3f}",
                  file=sys.stderr)
        if best is None or score > best[0]:
            best = (score, name, model, info)
    _, name, model, info = best
    return model, {**info, "chosen_on_validation": str(name), "validation": table}

"""Pieces the fine-tuning baselines share (not CNR's: baselines do not borrow from cnr)."""

from __future__ import annotations

import copy
import itertools

import torch

from ..data import batches
from ..tuning import select_on_validation  # noqa: F401  (SCRUB and SalUn choose on validation)


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
    retain = ds.retain_classes(forget)
    return ds.train.of_classes(retain), ds.train.of_classes(forget), retain


def generator(seed):
    return torch.Generator().manual_seed(seed)

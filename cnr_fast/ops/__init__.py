"""Ops used by the stages, each dispatched through `backend.call` (see backend.py)."""

from __future__ import annotations

from . import reference
from .backend import call


def class_sums(feats, labels, num_classes):
    return call("class_sums", feats, labels, num_classes)


def selectivity_topk(means, forget, retain, k):
    return call("selectivity_topk", means, forget, retain, k)


def tv_loss(x):
    return call("tv_loss", x)


def selective_loss(feats, f_idx, r_idx, alpha):
    return call("selective_loss", feats, f_idx, r_idx, alpha)


def linear_cka(x, y):
    return call("linear_cka", x, y)


__all__ = ["class_sums", "selectivity_topk", "tv_loss", "selective_loss", "linear_cka", "reference"]

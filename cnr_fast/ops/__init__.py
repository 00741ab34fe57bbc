"""Ops used by the stages, each dispatched through `backend.call` (see backend.py)."""

from __future__ import annotations

from . import cka as _cka  # noqa: F401  (registers its native backends beside its kernels)
from . import knn as _knn  # noqa: F401  (registers the torch and faiss k-NN searches)
from . import spec
from .backend import call


def class_sums(feats, labels, num_classes):
    return call("class_sums", feats, labels, num_classes)


def class_sums_add(feats, labels, sums, counts=None):
    """Add one batch's per-class sums into `sums` (from `class_sums_buffer`) and counts, in place."""
    return call("class_sums_add", feats, labels, sums, counts)


def class_sums_buffer(feats, num_classes):
    return spec.class_sums_buffer(feats, num_classes)


def selectivity_topk(means, forget, retain, k):
    return call("selectivity_topk", means, forget, retain, k)


def tv_loss(x):
    return call("tv_loss", x)


def selective_loss(feats, f_idx, r_idx, alpha):
    return call("selective_loss", feats, f_idx, r_idx, alpha)


def linear_cka(x, y):
    return call("linear_cka", x, y)


__all__ = [
    "class_sums",
    "class_sums_add",
    "class_sums_buffer",
    "linear_cka",
    "spec",
    "selective_loss",
    "selectivity_topk",
    "tv_loss",
]

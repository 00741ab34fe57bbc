"""The native batched CKA (cnr_fast._C from csrc/) as the torch custom op `torch.ops.cnr_fast.cka_matrix`,
with a fake kernel (safe under torch.compile) and no backward; ops/cka.py dispatches to it."""

from __future__ import annotations

import torch

from .. import _native
from .cka_torch import check_args

# Beyond this many examples the native op's N x N Grams stop fitting comfortably in memory.
MAX_NATIVE_N = 32768


# ----------------------------------------------------------------------------------------------
# Native op, seen by torch as cnr_fast::cka_matrix


@torch.library.custom_op("cnr_fast::cka_matrix", mutates_args=())
def _cka_matrix_op(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], unbiased: bool, diag: bool) -> torch.Tensor:
    return _native.require().cka_matrix(list(feats_a), list(feats_b), unbiased, diag)


@_cka_matrix_op.register_fake
def _(feats_a, feats_b, unbiased, diag):
    shape = (len(feats_a),) if diag else (len(feats_a), len(feats_b))
    return feats_a[0].new_empty(shape, dtype=torch.float64)


def native_reasons(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> list[str]:
    """Why the native backend cannot run this call ([] = it can)."""
    why = list(_native.reasons(feats_a[0].device)) if len(feats_a) else ["no taps"]
    if torch.is_grad_enabled() and any(t.requires_grad for t in list(feats_a) + list(feats_b)):
        why.append("inputs require grad and the native op has no backward")
    return why


def cka_matrix_native(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    diag = check_args(feats_a, feats_b, unbiased, pairs)
    return torch.ops.cnr_fast.cka_matrix(list(feats_a), list(feats_b), unbiased, diag)


def linear_cka_native(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """spec.linear_cka through the native op: a 0-d float64 tensor."""
    return torch.ops.cnr_fast.cka_matrix([x], [y], False, True)[0]

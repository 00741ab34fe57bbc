"""Batched linear CKA between every tap of model A and every tap of model B, in one go.

    cka_matrix(feats_a, feats_b, unbiased=False, pairs="all") -> (T_a, T_b) float64
    cka_matrix(feats_a, feats_b, pairs="diag")                -> (T,) float64: only (t, t) pairs

feats_*: lists of (N, ...) activations on the same N examples, flattened to (N, D_t).
Each tap's features are centred and its N x N Gram K = Xc Xc^T is computed once; the HSIC of every
pair then comes from the Grams, CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

* unbiased=False: the biased estimator, equal to `reference.linear_cka` (Kornblith et al. 2019).
* unbiased=True: the unbiased HSIC U-statistic (Song et al. 2012; Nguyen et al. 2020 eq. 3) that
  pytorch-cka 1.1.3 (`cka.cka_from_features`) and torch-cka 0.21 (`CKA._HSIC`) use. Unlike
  pytorch-cka we do not clamp to [0, 1] (a negative value is the estimator saying "unrelated") and
  a zero or negative denominator gives NaN, not x / 1e-6. Needs N >= 4.

Backends (through `backend.call("cka_matrix", ...)`, so `CNR_FAST_BACKEND` and `cnr-fast doctor` see
them): "native" = cnr_fast._C (csrc/: C++/OpenMP with BLAS Grams on CPU, cuBLAS + kernels on CUDA),
exposed to torch as the custom op `torch.ops.cnr_fast.cka_matrix` with a fake kernel so it runs
under torch.compile; "reference" = `cka_matrix_torch` below, pure torch, differentiable.
The native op has no backward: with inputs that require grad the automatic choice is the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import _native
from .backend import call

# linear_cka: beyond this many examples the native op's N x N Grams stop fitting comfortably in
# memory and the feature-space `reference.linear_cka` (O(D1 D2) memory) is the better tool.
MAX_NATIVE_N = 32768


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _check(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], unbiased: bool, pairs: str) -> bool:
    """Validate the arguments; return diag (pairs == "diag")."""
    if pairs not in ("all", "diag"):
        raise ValueError(f"pairs must be 'all' or 'diag', got {pairs!r}")
    if isinstance(feats_a, torch.Tensor) or isinstance(feats_b, torch.Tensor):
        raise TypeError("feats_a and feats_b are lists of tensors (one per tap); wrap a single tensor in [ ]")
    if len(feats_a) == 0 or len(feats_b) == 0:
        raise ValueError("feats_a and feats_b need at least one tap each")
    diag = pairs == "diag"
    if diag and len(feats_a) != len(feats_b):
        raise ValueError(f"pairs='diag' needs as many taps in A ({len(feats_a)}) as in B ({len(feats_b)})")
    n = feats_a[0].shape[0] if feats_a[0].dim() > 0 else 0
    dev = feats_a[0].device
    for t in list(feats_a) + list(feats_b):
        if t.dim() < 1 or t.shape[0] != n:
            raise ValueError(f"every tap must be (N, ...) with the same N; got shapes {t.shape} and N={n}")
        if t.device != dev:
            raise ValueError(f"all taps must be on one device; got {t.device} and {dev}")
        if not t.is_floating_point():
            raise TypeError(f"taps must be floating point, got {t.dtype}")
        if math.prod(t.shape[1:]) == 0:
            raise ValueError(f"a tap has no features: shape {tuple(t.shape)}")
    need = 4 if unbiased else 2
    if n < need:
        raise ValueError(f"{'unbiased' if unbiased else 'biased'} CKA needs N >= {need} examples, got {n}")
    return diag


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
    diag = _check(feats_a, feats_b, unbiased, pairs)
    return torch.ops.cnr_fast.cka_matrix(list(feats_a), list(feats_b), unbiased, diag)


# ----------------------------------------------------------------------------------------------
# Pure-torch batched implementation: CPU fallback, test oracle of the native op, differentiable.


def _hsic_unbiased(cross, s_u, s_v, rowdot, n: int):
    # Same formula as csrc/cka/cka_core.h hsic_unbiased (keep the two in step).
    return (cross + s_u * s_v / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rowdot) / (n * (n - 3))


def cka_matrix_torch(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    diag = _check(feats_a, feats_b, unbiased, pairs)
    n = feats_a[0].shape[0]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in list(feats_a) + list(feats_b)) else torch.float32

    def grams(fs):
        gs = []
        for f in fs:
            x = _flat(f).to(dtype)
            x = x - x.mean(0, keepdim=True)  # torch's CPU/CUDA sums are pairwise: no float64 copy needed
            gs.append(x @ x.T)
        g = torch.stack(gs)  # (T, n, n), centred Grams
        if unbiased:  # K~: zero diagonal
            g = g - torch.diag_embed(torch.diagonal(g, dim1=1, dim2=2))
        return g

    ga, gb = grams(feats_a), grams(feats_b)
    # Pair sums over n^2 entries in the Grams' dtype (BLAS / pairwise sums), then float64.
    fa, fb = ga.reshape(len(feats_a), -1), gb.reshape(len(feats_b), -1)
    cross = ((fa * fb).sum(1) if diag else fa @ fb.T).double()
    self_a, self_b = fa.square().sum(1).double(), fb.square().sum(1).double()
    if unbiased:
        ra, rb = ga.sum(2, dtype=torch.float64), gb.sum(2, dtype=torch.float64)  # K~ 1
        sa, sb = ra.sum(1), rb.sum(1)
        if diag:
            cross = _hsic_unbiased(cross, sa, sb, (ra * rb).sum(1), n)
        else:
            cross = _hsic_unbiased(cross, sa[:, None], sb[None, :], ra @ rb.T, n)
        self_a = _hsic_unbiased(self_a, sa, sa, (ra * ra).sum(1), n)
        self_b = _hsic_unbiased(self_b, sb, sb, (rb * rb).sum(1), n)
    # biased: the 1/(n-1)^2 of HSIC cancels in the ratio
    den = self_a * self_b if diag else self_a[:, None] * self_b[None, :]
    ok = den > 0
    return torch.where(ok, cross / torch.where(ok, den, torch.ones_like(den)).sqrt(), torch.full_like(den, float("nan")))


# ----------------------------------------------------------------------------------------------
# Public API


def cka_matrix(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], unbiased: bool = False, pairs: str = "all"
) -> torch.Tensor:
    """Linear CKA of every (tap of A, tap of B) pair: (T_a, T_b) float64, or (T,) with pairs="diag".

    >>> a = [torch.randn(100, 8, 4, 4), torch.randn(100, 32)]
    >>> cka_matrix(a, a, pairs="diag")  # tensor([1., 1.], dtype=torch.float64)
    """
    _check(feats_a, feats_b, unbiased, pairs)
    return call("cka_matrix", list(feats_a), list(feats_b), unbiased=unbiased, pairs=pairs)


# The "native" backend of backend.py's single-pair op linear_cka (same signature as reference.linear_cka).


def linear_cka_native_reasons(x, y) -> list[str]:
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        return ["x and y must be tensors"]
    why = native_reasons([x], [y])
    if x.device != y.device:
        why.append("x and y on different devices")
    if x.dim() < 1 or y.dim() < 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        why.append("needs (N, ...) inputs with the same N >= 2")
    if not (x.is_floating_point() and y.is_floating_point()):
        why.append("needs floating-point inputs")
    if x.dim() >= 1 and x.shape[0] > MAX_NATIVE_N:
        why.append(f"N={x.shape[0]} > {MAX_NATIVE_N}: N x N Grams too large, the reference's feature-space form is better")
    return why


def native_reasons_for(op: str, *args, **kwargs) -> list[str]:
    """backend.py's hook. Without arguments (backend.describe / `cnr-fast doctor`): the environment
    only, for tensors on the best device here."""
    if not args and not kwargs:
        return list(_native.reasons("cuda" if torch.cuda.is_available() else "cpu"))
    if op == "linear_cka":
        return linear_cka_native_reasons(*args, **kwargs)
    return native_reasons(*args, **kwargs)


def linear_cka_native(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """reference.linear_cka through the native op: a 0-d float64 tensor."""
    return torch.ops.cnr_fast.cka_matrix([x], [y], False, True)[0]


__all__ = ["MAX_NATIVE_N", "cka_matrix", "cka_matrix_native", "cka_matrix_torch", "native_reasons"]

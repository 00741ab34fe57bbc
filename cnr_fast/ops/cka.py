"""Batched linear CKA between every tap of model A and every tap of model B, in one go.

    cka_matrix(feats_a, feats_b, unbiased=False, pairs="all") -> (T_a, T_b) float64
    cka_matrix(feats_a, feats_b, pairs="diag")                -> (T,) float64: only (t, t) pairs

feats_*: lists of (N, ...) activations on the same N examples, flattened to (N, D_t), centred.
CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = Xc Xc^T, L = Yc Yc^T.

* unbiased=False: the biased estimator, equal to `spec.linear_cka` (Kornblith et al. 2019).
* unbiased=True: the unbiased HSIC U-statistic (Song et al. 2012; Nguyen et al. 2020 eq. 3) that
  pytorch-cka 1.1.3 (`cka.cka_from_features`) and torch-cka 0.21 (`CKA._HSIC`) use. Unlike
  pytorch-cka we do not clamp to [0, 1] (a negative value is the estimator saying "unrelated") and
  a zero or negative denominator gives NaN, not x / 1e-6. Needs N >= 4.

Three paths compute the same numbers:

* "gram" (`cka_matrix_torch`, pure torch): every tap's N x N Gram once, all pairs from the Grams.
  Cost ~ 2 N^2 sum(D_t) FLOP plus N^2 bytes per tap: the right form when the taps are wide (D > N).
* "feature" (`cka_matrix_feature`, pure torch): the D_a x D_b cross-covariances,
  <K, L>_F = ||Xc^T Yc||_F^2; with centred features K 1 = 0, so the unbiased terms need only the
  row norms k = diag(K): tr(K~ L~) = <K, L> - k.l, 1^T K~ 1 = -sum(k), 1^T K~ L~ 1 = k.l.
  Cost ~ 2 N (D_a D_b + D_a^2 + D_b^2) per pair: the right form when N > D (10-20x cheaper at
  N = 10k, D = 512).
* "native" (`cka_matrix_native`, cnr_fast._C from csrc/): the Gram form in C++/OpenMP (staircase
  BLAS Grams, fused float64 reductions) on CPU, cuBLAS + kernels on CUDA; a torch custom op
  `torch.ops.cnr_fast.cka_matrix` with a fake kernel (safe under torch.compile), no backward.

`cka_matrix` picks by a cost model (`plan`): FLOPs plus bytes moved for each form, per pair with
pairs="diag" (early wide taps on the Gram form, late narrow ones in feature space), per call with
pairs="all". The native Gram is a candidate only on devices where it measured >= MIN_NATIVE_SPEEDUP
times faster than the torch Gram (NATIVE_GRAM_SPEEDUP, from bench/bench_cka.py): elsewhere it is
not chosen automatically. Every call goes through `backend.call` (so `cnr-fast doctor` shows the
choice): "native" when the native Gram alone is cheapest, else "planned" (the plan above);
CNR_FAST_BACKEND=native / planned / torch forces one; "torch" is the torch Gram form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _native
from .backend import Backend, always, call, register, requested

# the parts, by job (re-exported: `cnr_fast.ops.cka` is the API)
from .cka_native import MAX_NATIVE_N, cka_matrix_native, linear_cka_native, native_reasons  # noqa: F401
from .cka_plan import (  # noqa: F401
    BYTE_COST,
    MIN_NATIVE_SPEEDUP,
    NATIVE_GRAM_SPEEDUP,
    Plan,
    cost_feature,
    cost_gram,
    native_gram_speedup,
    native_policy_reasons,
    plan,
    run_plan,
)
from .cka_torch import check_args, cka_matrix_feature, cka_matrix_torch  # noqa: F401

# ----------------------------------------------------------------------------------------------
# Public API


def cka_matrix(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], unbiased: bool = False, pairs: str = "all"
) -> torch.Tensor:
    """Linear CKA of every (tap of A, tap of B) pair: (T_a, T_b) float64, or (T,) with pairs="diag".

    The path (feature space, torch Gram, native Gram) comes from `plan`, by cost; with
    CNR_FAST_BACKEND=native or =torch that backend runs instead (torch = the torch Gram form).

    >>> a = [torch.randn(100, 8, 4, 4), torch.randn(100, 32)]
    >>> cka_matrix(a, a, pairs="diag")  # tensor([1., 1.], dtype=torch.float64)
    """
    check_args(feats_a, feats_b, unbiased, pairs)
    return call("cka_matrix", list(feats_a), list(feats_b), unbiased=unbiased, pairs=pairs)


def cka_matrix_planned(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    """The cost model's choice (`plan`): feature space, torch Gram or native Gram for the call, or per
    pair with pairs="diag". The dispatcher's automatic choice for cka_matrix when the native Gram alone
    is not the cheapest (`cnr-fast doctor` shows it as "planned")."""
    return run_plan(plan(feats_a, feats_b, unbiased, pairs), feats_a, feats_b, unbiased, pairs)


# The "native" backend of backend.py's single-pair op linear_cka (same signature as spec.linear_cka).


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
        why.append(f"N={x.shape[0]} > {MAX_NATIVE_N}: N x N Grams too large, the spec's feature-space form is better")
    return why


def _cost_reasons(op: str, *args, **kwargs) -> list[str]:
    """Automatic choice only: why the cost model does not pick the native op for this call."""
    try:
        if op == "linear_cka":
            x, y = args[0], args[1]
            if min(x.dim(), y.dim()) < 1 or x.shape[0] < 2:
                return []
            p = plan([x], [y], False, "diag")
            # linear_cka's other backend is the feature-space spec.linear_cka
            if p.native_reasons:
                return list(p.native_reasons)
            return [] if p.costs["native"] <= p.costs["feature"] else ["cost model: the feature-space form is cheaper"]
        p = plan(*args, **kwargs)
    except (TypeError, ValueError, IndexError, AttributeError):
        return []  # the call itself is invalid: the op reports it
    if p.path == "native":
        return []
    return list(p.native_reasons) or [f"cost model: path {p.path!r} is cheaper ({_fmt_costs(p.costs)})"]


def _fmt_costs(costs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2g}" for k, v in costs.items())


def native_reasons_for(op: str, *args, **kwargs) -> list[str]:
    """backend.py's hook. Without arguments (backend.describe / `cnr-fast doctor`): the environment
    only, for tensors on the best device here. With CNR_FAST_BACKEND unset / auto, also the cost
    model's reasons (a slower native path is never chosen automatically); with
    CNR_FAST_BACKEND=native only what makes the op unable to run."""
    if not args and not kwargs:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        why = list(_native.reasons(dev))
        if requested() == "auto":
            why += native_policy_reasons(dev, 0)
        return why
    why = linear_cka_native_reasons(*args, **kwargs) if op == "linear_cka" else native_reasons(*args, **kwargs)
    if not why and requested() == "auto":
        why = _cost_reasons(op, *args, **kwargs)
    return why


def _native_check(op: str):
    def not_supported_reasons(*args, **kwargs) -> list[str]:
        return native_reasons_for(op, *args, **kwargs)

    not_supported_reasons.__name__ = f"native_{op}_reasons"
    return not_supported_reasons


# This file's backends, beside their kernels: the native library cnr_fast._C (csrc/; C++/OpenMP on CPU,
# CUDA when built with it) for the batched CKA of every tap pair (torch = the torch Gram form
# above) and for the single-pair linear_cka (torch = spec.linear_cka).
register("cka_matrix", Backend("torch", "cnr_fast.ops.cka:cka_matrix_torch", always))
register("cka_matrix", Backend("native", "cnr_fast.ops.cka:cka_matrix_native", _native_check("cka_matrix")))
# between them, the cost model's plan (feature space / Gram / native per pair): what auto runs unless
# the native Gram alone is cheapest for the whole call (then "native", checked first)
register("cka_matrix", Backend("planned", "cnr_fast.ops.cka:cka_matrix_planned", always))
register("linear_cka", Backend("native", "cnr_fast.ops.cka:linear_cka_native", _native_check("linear_cka")))


__all__ = ["MAX_NATIVE_N", "NATIVE_GRAM_SPEEDUP", "Plan", "cka_matrix", "cka_matrix_feature", "cka_matrix_native",
           "cka_matrix_torch", "cost_feature", "cost_gram", "native_reasons", "plan", "run_plan"]

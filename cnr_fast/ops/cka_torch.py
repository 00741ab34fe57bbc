"""The pure-torch paths of batched linear CKA (ops/cka.py has the whole story): the Gram form
(`cka_matrix_torch`, every tap's N x N Gram once) and the feature form (`cka_matrix_feature`, the D_a x D_b
cross-covariances); the CPU fallback, the native op's test oracle, differentiable. `check_args` validates
the arguments every path takes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def check_args(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], unbiased: bool, pairs: str) -> bool:
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
# Pure-torch batched implementation: CPU fallback, test oracle of the native op, differentiable.


def _hsic_unbiased(cross, s_u, s_v, rowdot, n: int):
    # Same formula as csrc/cka/cka_core.h hsic_unbiased (keep the two in step).
    return (cross + s_u * s_v / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rowdot) / (n * (n - 3))


def cka_matrix_torch(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    diag = check_args(feats_a, feats_b, unbiased, pairs)
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
# Feature-space form (pure torch, differentiable): no N x N matrix anywhere.


def _centred(f: torch.Tensor, dtype) -> torch.Tensor:
    x = _flat(f).to(dtype)
    return x - x.mean(0, keepdim=True)


def _sq_fro(m: torch.Tensor) -> torch.Tensor:
    """||m||_F^2 summed in float64 (the squares are exact enough in m's dtype)."""
    return m.square().sum(dtype=torch.float64)


def cka_matrix_feature(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    """cka_matrix in feature space: ||Xc^T Yc||_F^2 per pair, ||Xc^T Xc||_F^2 per tap.

    With centred features K 1 = 0 and K~ = K - diag(k), k_i = ||Xc_i||^2, so the unbiased HSIC is
    [<K, L> - k.l + sum(k) sum(l) / ((n-1)(n-2)) - 2/(n-2) k.l] / (n(n-3)), <K, L> = ||Xc^T Yc||^2.
    """
    diag = check_args(feats_a, feats_b, unbiased, pairs)
    n = feats_a[0].shape[0]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in list(feats_a) + list(feats_b)) else torch.float32
    xa = [_centred(f, dtype) for f in feats_a]
    xb = [_centred(f, dtype) for f in feats_b]
    self_a = torch.stack([_sq_fro(x.T @ x) for x in xa])
    self_b = torch.stack([_sq_fro(y.T @ y) for y in xb])
    if diag:
        cross = torch.stack([_sq_fro(x.T @ y) for x, y in zip(xa, xb)])
    else:
        cross = torch.stack([torch.stack([_sq_fro(x.T @ y) for y in xb]) for x in xa])
    if unbiased:
        ka = torch.stack([x.square().sum(1, dtype=torch.float64) for x in xa])  # (T_a, n) row norms
        kb = torch.stack([y.square().sum(1, dtype=torch.float64) for y in xb])
        sa, sb = ka.sum(1), kb.sum(1)
        c1, c2 = 1.0 / ((n - 1) * (n - 2)), 1.0 + 2.0 / (n - 2)

        def hsic(fro, s_u, s_v, kdot):
            return (fro + s_u * s_v * c1 - c2 * kdot) / (n * (n - 3))

        if diag:
            cross = hsic(cross, sa, sb, (ka * kb).sum(1))
        else:
            cross = hsic(cross, sa[:, None], sb[None, :], ka @ kb.T)
        self_a = hsic(self_a, sa, sa, (ka * ka).sum(1))
        self_b = hsic(self_b, sb, sb, (kb * kb).sum(1))
    den = self_a * self_b if diag else self_a[:, None] * self_b[None, :]
    ok = den > 0
    return torch.where(ok, cross / torch.where(ok, den, torch.ones_like(den)).sqrt(), torch.full_like(den, float("nan")))


# ----------------------------------------------------------------------------------------------
# Cost model and dispatch

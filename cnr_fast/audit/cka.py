"""Linear CKA between the original and the audited model, per tap (CKA_pos on retain, CKA_neg on forget).

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Xc, Yc column-centred, in float64: the
biased (Kornblith et al. 2019) linear CKA of ops.linear_cka. When the examples are fewer than the
units (the usual case for early taps) the same value is computed from the N x N Gram matrices
(||Yc^T Xc||^2 = <Xc Xc^T, Yc Yc^T>), which is far cheaper than the D x D feature-space form.
If the native batched op `cnr_fast.ops.cka.cka_matrix` exists it is used instead.
"""

from __future__ import annotations

import torch

from .. import ops


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    if max(x.shape[1], y.shape[1]) <= n:
        return float(ops.linear_cka(x, y))
    xc = x.double() - x.double().mean(0, keepdim=True)
    yc = y.double() - y.double().mean(0, keepdim=True)
    k = xc @ xc.T
    l = yc @ yc.T
    den = k.norm() * l.norm()
    return float((k * l).sum() / den) if den > 0 else float("nan")


def _native():
    try:
        from ..ops.cka import cka_matrix

        return cka_matrix
    except ImportError:
        return None


def cka_per_tap(feats_a: dict[str, torch.Tensor], feats_b: dict[str, torch.Tensor], rows=None,
                unbiased: bool = False) -> dict[str, float]:
    """{tap: CKA(feats_a[tap][rows], feats_b[tap][rows])} for the taps both hold.

    unbiased=True: the debiased-HSIC estimator (ops.cka, Song et al. 2012), which unlike the biased
    one does not drift towards 1 as N shrinks relative to the feature count; needs N >= 4.
    """
    taps = [t for t in feats_a if t in feats_b]
    xs = [feats_a[t] if rows is None else feats_a[t][rows] for t in taps]
    ys = [feats_b[t] if rows is None else feats_b[t][rows] for t in taps]
    native = _native()
    if native is not None:
        try:
            vals = native(xs, ys, unbiased=unbiased, pairs="diag")
            vals = [float(v) for v in torch.as_tensor(vals).reshape(-1)]
            if len(vals) == len(taps):
                return dict(zip(taps, vals))
        except (TypeError, ValueError, RuntimeError, NotImplementedError):
            pass  # a different calling convention or an unsupported input: the reference below
    if unbiased:
        from ..ops.cka import cka_matrix_torch

        if not xs or xs[0].shape[0] < 4:
            return {t: float("nan") for t in taps}
        vals = cka_matrix_torch([x.double() for x in xs], [y.double() for y in ys], unbiased=True, pairs="diag")
        return {t: float(v) for t, v in zip(taps, vals.reshape(-1))}
    return {t: linear_cka(x, y) for t, x, y in zip(taps, xs, ys)}

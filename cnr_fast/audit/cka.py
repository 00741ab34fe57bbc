"""Linear CKA between the original and the audited model, per tap (CKA_pos on retain, CKA_neg on forget).

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Xc, Yc column-centred: the biased
(Kornblith et al. 2019) linear CKA of ops.linear_cka; cka_per_tap's default is the unbiased
(debiased-HSIC) estimator. Both go through `cnr_fast.ops.cka.cka_matrix`, which computes each tap
either from the N x N Gram matrices (||Yc^T Xc||^2 = <Xc Xc^T, Yc Yc^T>; cheaper when the units
outnumber the examples, the usual case for early taps) or in feature space (cheaper when N > D,
late taps), whichever its cost model says is cheaper, per tap.
"""

from __future__ import annotations

import torch

from ..ops.cka import cka_matrix


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Biased linear CKA of one pair, in float64 (NaN for N < 2 or a constant input)."""
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    if x.shape[0] < 2:
        return float("nan")
    return float(cka_matrix([x.double()], [y.double()], unbiased=False, pairs="diag")[0])


def cka_per_tap(feats_a: dict[str, torch.Tensor], feats_b: dict[str, torch.Tensor], rows=None,
                unbiased: bool = False) -> dict[str, float]:
    """{tap: CKA(feats_a[tap][rows], feats_b[tap][rows])} for the taps both hold.

    unbiased=True: the debiased-HSIC estimator (ops.cka, Song et al. 2012), which unlike the biased
    one does not drift towards 1 as N shrinks relative to the feature count; needs N >= 4 (NaN
    below). Computed in the features' dtype with float64 sums (float32 agrees with float64 to ~1e-6).
    """
    taps = [t for t in feats_a if t in feats_b]
    xs = [feats_a[t] if rows is None else feats_a[t][rows] for t in taps]
    ys = [feats_b[t] if rows is None else feats_b[t][rows] for t in taps]
    if not taps:
        return {}
    if xs[0].shape[0] < (4 if unbiased else 2):
        return {t: float("nan") for t in taps}
    vals = cka_matrix(xs, ys, unbiased=unbiased, pairs="diag")
    return {t: float(v) for t, v in zip(taps, vals.reshape(-1).tolist())}

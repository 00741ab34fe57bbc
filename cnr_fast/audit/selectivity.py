"""Selectivity depth profile (paper Fig. 3): how much the original's forget-selective units lost.

Per tap: S = mu(forget) - mean over retain classes of mu(c) (eqs. 1-3) from per-class mean
activations on probe-train; U_f = the original model's TopK(S_original, K) units (K = 12, at most
half the units, as DetectConfig). selectivity = mean over forget classes and units in U_f of
S_model[u]; selectivity_delta = selectivity(audited) - selectivity(original) (negative = reduced).
"""

from __future__ import annotations

import torch

from .. import ops

DEFAULT_K = 12


def selectivity_map(means: torch.Tensor, forget, retain) -> torch.Tensor:
    means = means.float()
    return means[list(forget)] - means[list(retain)].mean(0)


def top_units(means_orig: torch.Tensor, forget, retain, k: int = DEFAULT_K) -> torch.Tensor:
    k = max(1, min(k, means_orig.shape[1] // 2 or 1))
    _, f_idx, _ = ops.selectivity_topk(means_orig.float(), list(forget), list(retain), k)
    return f_idx  # (F, k)


def unit_selectivity(means: torch.Tensor, f_idx: torch.Tensor, forget, retain) -> float:
    s = selectivity_map(means, forget, retain)
    return float(torch.gather(s, 1, f_idx).mean())


def selectivity_profile(means_orig: dict, means_model: dict, forget, retain, k: int = DEFAULT_K) -> dict:
    """{"selectivity": {tap: value}, "selectivity_orig": {tap: value}, "selectivity_delta": {tap: value}}."""
    out = {"selectivity": {}, "selectivity_orig": {}, "selectivity_delta": {}}
    for tap, m_o in means_orig.items():
        if tap not in means_model:
            continue
        f_idx = top_units(m_o, forget, retain, k)
        a = unit_selectivity(means_model[tap], f_idx, forget, retain)
        o = unit_selectivity(m_o, f_idx, forget, retain)
        out["selectivity"][tap], out["selectivity_orig"][tap], out["selectivity_delta"][tap] = a, o, a - o
    return out

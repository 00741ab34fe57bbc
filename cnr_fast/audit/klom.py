"""KLOM, the KL divergence of margins: per example, how far the distribution of its margin over unlearned
models lies from the distribution over oracle models (retrained without the forgotten data).

Sources (what is taken from where):

* KLOM was proposed in Georgiev, Rinberg, Park, Garg, Ilyas, Madry, Neel, "Attribute-to-Delete: Machine
  Unlearning via Datamodel Matching" (arXiv 2410.23232, App. E.1, as the benchmark's README cites it; that
  appendix was not read here). The benchmark that reports it: Rinberg, Puigdemont, Pawelczyk, Cevher, "Easy
  Data Unlearning Bench" (arXiv 2602.16400). Only the paper's abstract was readable in the reference store;
  everything below is read from the code released with it, easydub/EasyDUB-code (commit 5de3c4c), and
  checked against its predecessor RoyRin/data-unlearning-bench (commit eb261f9).
* Margin (EasyDUB README, "KLOM Metric"; data-unlearning-bench unlearning_bench/eval.py `get_margin`):
  m = z_c - log sum_{j != c} exp(z_j) for logits z and true label c. `margins` computes it as
  ulira.scaled_logit(z, y, eps=0), which is exactly that after clamping logits to [-1e4, 1e4] (LogitMask's
  -inf gives about -1e4; the clipping below makes it -100, as the reference's np.clip does with -inf).
* Per-example divergence (easydub/eval.py `binned_kl_divergence`, its defaults bin_count=20, eps=1e-5,
  min_val=-100, max_val=100; `klom_from_margins` calls it with p = the unlearned models' margins and
  q = the oracle models', so KLOM = KL(unlearned || oracle)):
  both sample sets are clipped to [-100, 100]; 20 equal-width bins span [start, end], the minimum and
  maximum of the two sets together (np.linspace(start, end, 21)), [start, start + 1] where every sample is
  equal; each sample's bin is np.digitize's index and only indices 1..20 are counted, so a sample equal to
  `end` (index 21) is NOT counted: the largest value of the two sets drops out (REPRODUCED as published:
  with K models per set one of the 2K samples, or all of a set that sits entirely at the top, in which case
  that set's probabilities are all 0 and the example's KL reads 0); counts become probabilities per set;
  in bins where p > 0, q is floored at eps (no renormalisation); KL = sum over p > 0 of p log(p / q), in
  nats. Bin edges and digitize are those of numpy (`binned_kl` is vectorised over examples: the bin index
  is the number of edges <= the sample, which is what np.digitize returns for increasing edges).
* Summary (EasyDUB eval_pretrain.py, reproduce.py `load_baselines`): np.percentile(klom, 95) (numpy's
  default linear interpolation) over the examples of each split, "retain", "forget" and "val"; lower is
  better; the oracle against itself scores 0.
* Differences in data-unlearning-bench, not followed: its eval.py `compute_binned_KL_div` returns
  scipy.stats.entropy(p, q_safe), which renormalises the eps-floored q; and its run.py `load_klom` passes
  (oracle_margins, margins) into `kl_from_margins(all_unlearned_margins, all_oracle_margins)`, computing
  KL(oracle || unlearned). EasyDUB's code, released with arXiv 2602.16400, fixes the direction as above.

Reading it with few models: with K models per set the histograms have K samples in 20 bins, so two sets
drawn from the same distribution already give a sizeable KL (an unshared bin of p costs
(1/K) log(1 / (K eps))), and two disjoint sets give at most log(1 / eps) = 11.5 (all of p in one bin),
about log(1 / (K' eps)) when p is spread over K' bins. Simulated here (standard-normal margins, 4000
examples, P95): the same distribution on both sides gives 10.9 at K = 4, 8.8 at K = 8, 6.1 at K = 16,
3.0 at K = 32 and 0.65 at K = 100; one standard deviation apart 10.9 / 9.8 / 7.0 / 4.4 / 2.0; disjoint
11.5 / 10.7 / 10.3 / 10.1 / 10.0. The benchmark uses 100 models; at U-LiRA's default 8 shadow pairs P95
KLOM has about 2 nats between "same distribution" and "disjoint", and its split-half null (4 a side) sits
near saturation: read it against that null, not against 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

BINS = 20  # easydub/eval.py binned_kl_divergence(bin_count=20)
EPS = 1e-5  # its eps: the floor on q where p > 0
CLIP = (-100.0, 100.0)  # its min_val / max_val: margins are clipped to this range
PERCENTILE = 95  # eval_pretrain.py: np.percentile(klom, 95) per split
NULL_MIN_HALF = 4  # the split-half null needs this many models a side (at 2 a side every P95 reads log(1 / eps))


def margins(logits, y) -> np.ndarray:
    """The benchmark's margin z_y - log sum_{j != y} exp(z_j), (N,) float64 numpy (see module doc)."""
    from .ulira import scaled_logit

    return scaled_logit(logits, y, eps=0.0).numpy()


def _samples(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be (K models, N examples) with K >= 1, got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    return a


def binned_kl(p, q, *, bins: int = BINS, eps: float = EPS, clip: tuple[float, float] = CLIP) -> np.ndarray:
    """Per example (column), KL(P || Q) of the binned sample sets p[:, n] and q[:, n] (module doc): (N,) float64.

    p: (K_p, N) and q: (K_q, N) samples, e.g. margins of K models on N examples (K_p may differ from K_q).
    """
    p, q = _samples(p, "p"), _samples(q, "q")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"p and q cover different examples: N = {p.shape[1]} vs {q.shape[1]}")
    if bins < 1 or not eps > 0:
        raise ValueError(f"bins must be >= 1 and eps > 0, got {bins} and {eps}")
    p, q = np.clip(p, *clip), np.clip(q, *clip)
    start = np.minimum(p.min(0), q.min(0))
    end = np.maximum(p.max(0), q.max(0))
    end = np.where(start >= end, start + 1.0, end)
    edges = np.linspace(start, end, bins + 1)  # (bins + 1, N), as the reference's per-example np.linspace

    def probs(x):
        idx = (x[:, None, :] >= edges[None, :, :]).sum(1)  # np.digitize(x, edges): edges <= x
        counts = np.stack([(idx == i).sum(0) for i in range(1, bins + 1)]).astype(np.float64)  # index bins+1 dropped
        total = counts.sum(0)
        return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)

    pp, qq = probs(p), probs(q)
    qs = np.where(pp > 0, np.maximum(qq, eps), qq)
    ratio = np.divide(pp, qs, out=np.ones_like(pp), where=pp > 0)
    return (pp * np.log(ratio)).sum(0)


def klom(unlearned, oracle, **kw) -> np.ndarray:
    """Per-example KLOM = KL(unlearned || oracle) of the margins: unlearned (K_u, N), oracle (K_o, N) -> (N,)."""
    return binned_kl(unlearned, oracle, **kw)


def percentile(values, q: float = PERCENTILE) -> float | None:
    """np.percentile(values, q) (linear interpolation, the benchmark's P95); None for no values."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if v.size else None


def summary(unlearned: Mapping[str, object], oracle: Mapping[str, object], **kw) -> dict[str, float | None]:
    """P95 of the per-example KLOM over each split: {split: P95}, for the splits both mappings hold
    (each split's margins (K, N) of the unlearned and of the oracle models on the same N examples)."""
    return {s: percentile(klom(unlearned[s], oracle[s], **kw)) for s in unlearned if s in oracle}


__all__ = ["BINS", "CLIP", "EPS", "PERCENTILE", "binned_kl", "klom", "margins", "percentile", "summary"]


# ------------------------------------------------------------------------------- over shadow pairs

DEFINITION = (
    "KLOM (Easy Data Unlearning Bench, arXiv 2602.16400; code easydub/EasyDUB-code easydub/eval.py "
    "binned_kl_divergence / klom_from_margins, eval_pretrain.py): per example, KL(unlearned || retrained) in nats "
    "between the histograms (20 equal-width bins over the two sets' joint range, margins clipped to [-100, 100], "
    "the retrained side floored at 1e-5 where the unlearned side has mass) of the example's margin "
    "z_y - log sum_{j != y} exp z_j over the K method-unlearned shadow models and over the K retrained shadow "
    "models; reported as the 95th percentile over the examples of each split (0 = same distributions; with "
    "K models per side the floor for equal distributions is well above 0, see `null`). "
    "`original`: the shadow originals (before unlearning) in the unlearned models' place, the benchmark's "
    "pretrain baseline. `null`: the retrained shadows split in two halves of K/2, first half against second "
    "(a model that never saw the class in the method's place), beside the method's first K/2 shadows against "
    "the same second half.")


def _views(m: Mapping[str, np.ndarray], groups: Mapping[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {**m, **{g: m[s][:, mask] for g, (s, mask) in groups.items() if s in m}}


def _rows(m: Mapping[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {s: v[rows] for s, v in m.items()}


def shadow_summary(unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray],
                   original: Mapping[str, np.ndarray] | None = None, *,
                   groups: Mapping[str, tuple[str, np.ndarray]] | None = None, **kw) -> dict:
    """KLOM's P95 per split over K shadow pairs (pair k = row k of every array).

    unlearned / retrained / original: {split: (K, N_split)} margins of the method's unlearned shadows, the
    retrained shadows and the shadow originals; groups: {name: (split, bool mask over its N)}, sub-splits
    reported beside the splits. Returns {"audited": {split: P95}, "original": {...} (with `original`),
    "null": {"k": K // 2, "audited": first K/2 unlearned vs last K/2 retrained, "null": first K/2 retrained
    vs last K/2 retrained} (when K/2 >= NULL_MIN_HALF: with fewer models a side every example reads near
    log(1 / eps))}.
    """
    groups = groups or {}
    u, r = _views(unlearned, groups), _views(retrained, groups)
    out = {"audited": summary(u, r, **kw)}
    if original is not None:
        out["original"] = summary(_views(original, groups), r, **kw)
    k = min(len(v) for v in (*u.values(), *r.values()))
    h = k // 2
    if h >= NULL_MIN_HALF:
        second = _rows(r, slice(h, 2 * h))
        out["null"] = {"k": h, "audited": summary(_rows(u, slice(0, h)), second, **kw),
                       "null": summary(_rows(r, slice(0, h)), second, **kw)}
    return out


__all__ += ["DEFINITION", "NULL_MIN_HALF", "shadow_summary"]

"""Per-example U-LiRA for class removal: can an adversary tell the audited (unlearned) model from a retrained one?

Sources (what is taken from where; the choices made here are marked CHOICE):

* U-LiRA: Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact unlearning needs more careful
  evaluations to avoid a false sense of privacy" (arXiv 2403.01218, v3). It adapts LiRA to unlearning as a
  *per-example* U-MIA: for each example a dedicated attacker is built from shadow models, one set that
  trained on the example and then ran the unlearning method, one set that never trained on it (the
  retrain-from-scratch world), and it asks which of the two worlds a target model's output on the example
  came from. Only the abstract and method-level summaries of this paper were readable in the reference
  store this module was written against, so its exact section / equation numbers are not quoted here.
  What is implemented is LiRA's two-Gaussian test (below) with "in" = unlearned shadows and "out" =
  retrained shadows, which is how the abstract and the public re-implementations describe U-LiRA (e.g.
  LiouTang/Unlearn-Apollo-Attack, attacks/ULiRA.py: norm.fit on unlearned-shadow outputs vs
  retrained-shadow outputs, ratio of the two pdfs at the target's output).
  CHOICE (class removal): in the paper the two hypotheses are about an example for one target model
  (unlearned from it vs never trained on); here the forget class is removed as a whole, so the
  per-example question is asked of *models*: "is this the audited method's model or a retrained one?",
  scored on the same example for both kinds of target (`ulira`, `ulira_loo`).

* LiRA: Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership inference attacks from first principles"
  (IEEE S&P 2022, arXiv 2112.03570), reference code tensorflow/privacy research/mi_lira_2021.
  Section references below are from memory of the paper (only its abstract page was in the reference store);
  the formulas were checked against the reference code, which was readable.
  - Logit scaling (paper Sec. IV, "logit scaling"; code score.py): phi(p) = log(p_y / (1 - p_y)) of the
    true-label softmax probability, computed in the code as log(p_y + 1e-45) - log(sum_{j != y} p_j + 1e-45)
    after a max-shifted float64 softmax. `scaled_logit` computes the same quantity in log space:
    log p_y = z_y - logsumexp(z), log(1 - p_y) = logsumexp_{j != y}(z) - logsumexp(z), and
    phi = logaddexp(log p_y, log eps) - logaddexp(log(1 - p_y), log eps) with eps = 1e-45 (default).
    This equals z_y - logsumexp_{j != y} z_j to relative error < eps / min(p_y, 1 - p_y), and saturates
    smoothly at +-log(1/eps) = +-103.6 instead of reaching +-inf. eps = 0 gives the exact logsumexp form.
  - Online attack (paper Algorithm 1): fit N(mu_in, s_in^2), N(mu_out, s_out^2) to the
    shadows' phi per example and score the target's phi by the likelihood ratio of the two densities;
    reference code plot.py `generate_ours` scores logpdf_in - logpdf_out (as a difference of negated
    log-pdfs) and takes the per-example location by np.median, the scale by np.std (ddof=0), + 1e-30.
  - Fixed variance (paper Sec. IV, "global variance" for few shadow models; code plot.py `fix_variance`):
    one variance for all examples instead of one per example. The code uses np.std over the whole
    (examples x shadows) array, which also absorbs the spread of the per-example means.
    CHOICE: "pooled" here is the mean of the per-example (within-example) variances, a separate one per
    kind (unlearned / retrained); that is the estimate of the common sigma^2 under "per-example means,
    one shared variance", and it is what LiRA's fixed-variance idea means without the between-example
    spread. `variance="auto"` (default) pools when K < POOL_BELOW = 64: LiRA reports the fixed-variance
    variant as the better one when shadow models are few (our recollection of the paper's discussion puts
    the crossover at about 64 shadows; treat the number as a setting, not a citation).
  - Offline attack (paper Sec. IV, offline variant: a one-sided test against the "out" Gaussian only;
    code plot.py `generate_ours_offline` scores the log-density under it). Not implemented: U-LiRA has
    both kinds of shadow, and the side on which an unlearned model differs from a retrained one is not
    known in advance (it can be over- or under-confident on the forget class).
  CHOICE: location = mean by default (Algorithm 1), `center="median"` as in the reference code;
  scale uses ddof=1 (unbiased; needs K >= 2) where the reference code uses ddof=0; variance floor
  `min_sd` = 1e-3 logit units (reference: + 1e-30), so identical shadows (e.g. every LogitMask shadow
  saturating at -103.6) give a finite, large log-LR rather than inf / nan.

* Evaluation (CHOICE): AUC by the Mann-Whitney statistic with tied scores given averaged ranks (equals the
  trapezoidal area under the ROC with ties as diagonal segments, which is sklearn's roc_auc_score); ROC
  points at every distinct threshold; TPR at FPR alpha by linear interpolation between ROC points (the
  randomised-threshold classifier that attains FPR = alpha exactly; identical to np.interp on sklearn's
  roc_curve), taking the highest TPR where the curve is vertical at alpha. LiRA's plot.py instead reads
  TPR at the last point with FPR < alpha (a step), available as `tpr_at_fpr(..., mode="step")`.
  TPR at FPR alpha is reported only when alpha * n_neg >= 1 (otherwise it is None): below that the ROC has
  no point between FPR 0 and alpha and the number is an interpolation artefact. n_pos / n_neg are reported
  so a reader knows the resolution (1 / n_neg on the FPR axis). "acc_at_0" is the balanced accuracy of
  the likelihood-ratio rule "unlearned iff log-LR > 0" (equal priors), the accuracy-style number U-LiRA
  results are quoted in by later work (0.5 = indistinguishable).

Sign convention throughout: log-LR > 0 means the target's output on the example looks like the audited
method's unlearned shadows rather than the retrained ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

LOGIT_FLOOR = -1e4  # logits are clamped to [LOGIT_FLOOR, -LOGIT_FLOOR] (LogitMask gives -inf), as in mia.py
LIRA_EPS = 1e-45  # LiRA's reference score.py: log(p + 1e-45) - log(1 - p + 1e-45)
PHI_MAX = -math.log(LIRA_EPS)  # |phi| <= 103.6 when eps = LIRA_EPS
MIN_SD = 1e-3  # floor on a fitted standard deviation, in logit units
POOL_BELOW = 64  # variance="auto" pools (LiRA's fixed variance) when there are fewer shadows of a kind
VARIANCES = ("auto", "per_example", "pooled")
CENTERS = ("mean", "median")
FPR_LEVELS = (0.01, 0.001)


# ------------------------------------------------------------------------------------------ statistic


def scaled_logit(logits: torch.Tensor, y: torch.Tensor, *, eps: float = LIRA_EPS) -> torch.Tensor:
    """LiRA's scaled logit of the true label, phi = log(p_y / (1 - p_y)), (N,) float64, always finite.

    logits (N, C), C >= 2, any float dtype; y (N,) integer labels in [0, C). Computed in float64 log space
    (see the module docstring): log p_y = z_y - lse(z), log(1 - p_y) = lse_{j != y}(z) - lse(z),
    phi = logaddexp(log p_y, log eps) - logaddexp(log(1 - p_y), log eps), |phi| <= log(1/eps) (103.6 at the
    default eps = 1e-45, LiRA's constant); eps = 0 gives exactly z_y - lse_{j != y} z_j. Logits are first
    clamped to [-1e4, 1e4]: LogitMask's -inf forget logit becomes -1e4, so a masked true class gives
    phi = -103.6 (eps = 1e-45) or about -1e4 (eps = 0), never -inf. NaN logits raise ValueError.
    """
    z = torch.as_tensor(logits)
    yy = torch.as_tensor(y)
    if z.ndim != 2 or yy.ndim != 1 or z.shape[0] != yy.shape[0]:
        raise ValueError(f"scaled_logit needs logits (N, C) and y (N,), got {tuple(z.shape)} and {tuple(yy.shape)}")
    if z.shape[1] < 2:
        raise ValueError("scaled_logit needs at least 2 classes (1 - p_y is 0 with one class)")
    if not (0.0 <= eps < 1.0):
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    if yy.dtype.is_floating_point or yy.dtype == torch.bool:
        raise ValueError("y must hold integer labels")
    if len(yy) and (int(yy.min()) < 0 or int(yy.max()) >= z.shape[1]):
        raise ValueError(f"labels must be in [0, {z.shape[1]})")
    z = z.detach().to("cpu", torch.float64)
    if torch.isnan(z).any():
        raise ValueError("logits contain NaN")
    z = z.clamp(LOGIT_FLOOR, -LOGIT_FLOOR)  # also maps -inf / +inf
    idx = yy.long().view(-1, 1)
    zy = z.gather(1, idx).squeeze(1)
    lse = torch.logsumexp(z, 1)
    lse_rest = torch.logsumexp(z.scatter(1, idx, float("-inf")), 1)  # finite: >= 1 other finite logit
    logp, log1mp = zy - lse, lse_rest - lse
    if eps > 0:
        leps = torch.full_like(logp, math.log(eps))
        return torch.logaddexp(logp, leps) - torch.logaddexp(log1mp, leps)
    return logp - log1mp


# ------------------------------------------------------------------------------------------ Gaussian fit


def _phis(a, name: str, min_k: int = 2) -> np.ndarray:
    x = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (K shadows, N examples), got shape {x.shape}")
    k, n = x.shape
    if k < min_k:
        raise ValueError(f"{name} has K = {k} shadow model(s); at least {min_k} are needed to fit a variance")
    if n == 0:
        raise ValueError(f"{name} has no examples")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf (compute phis with scaled_logit, which is always finite)")
    return x


def _vector(a, name: str, n: int | None = None) -> np.ndarray:
    x = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    if x.ndim != 1 or (n is not None and len(x) != n):
        raise ValueError(f"{name} must be ({n if n is not None else 'N'},), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _resolve_variance(variance: str, k: int) -> str:
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if variance == "auto":
        return "pooled" if k < POOL_BELOW else "per_example"
    return variance


def fit_gaussians(phis, *, variance: str = "auto", min_sd: float = MIN_SD,
                  center: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Per-example Gaussian fit to shadow statistics: phis (K, N) -> (mu (N,), sigma (N,)) float64.

    mu: per-example mean over the K shadows (`center="median"`: median, as LiRA's plot.py). sigma:
    per-example sample standard deviation (ddof=1) when variance="per_example"; the square root of the mean
    over examples of those variances, the same for every example, when variance="pooled" (LiRA's
    "fixed variance", without the between-example spread; see module docstring); "auto" pools when
    K < 64. sigma is floored at `min_sd` (> 0), so constant phis give sigma = min_sd, not 0.
    K < 2, N = 0 or non-finite phis raise ValueError.
    """
    x = _phis(phis, "phis")
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    if not (min_sd > 0 and math.isfinite(min_sd)):
        raise ValueError(f"min_sd must be a positive finite number, got {min_sd}")
    mode = _resolve_variance(variance, x.shape[0])
    mu = x.mean(0) if center == "mean" else np.median(x, 0)
    var = x.var(0, ddof=1)
    if mode == "pooled":
        var = np.full_like(var, var.mean())
    return mu, np.maximum(np.sqrt(var), min_sd)


def likelihood_ratio(phi_target, mu_u, sd_u, mu_r, sd_r) -> np.ndarray:
    """Per-example log N(phi; mu_u, sd_u^2) - log N(phi; mu_r, sd_r^2), (N,) float64.

    Positive = the target's phi is likelier under the unlearned-shadow Gaussian than under the
    retrained-shadow one. Every argument is (N,) (a scalar sd broadcasts); sds must be > 0.
    """
    phi = _vector(phi_target, "phi_target")
    n = len(phi)
    mu_u, mu_r = _vector(mu_u, "mu_u", n), _vector(mu_r, "mu_r", n)
    sd_u = np.broadcast_to(np.asarray(sd_u, dtype=np.float64), (n,))
    sd_r = np.broadcast_to(np.asarray(sd_r, dtype=np.float64), (n,))
    if not (np.isfinite(sd_u).all() and np.isfinite(sd_r).all() and (sd_u > 0).all() and (sd_r > 0).all()):
        raise ValueError("standard deviations must be finite and > 0 (fit_gaussians floors them)")
    zu, zr = (phi - mu_u) / sd_u, (phi - mu_r) / sd_r
    return np.log(sd_r) - np.log(sd_u) + 0.5 * (zr * zr - zu * zu)


# ------------------------------------------------------------------------------------------ ROC / AUC


def _two_sets(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pos, dtype=np.float64).ravel()
    q = np.asarray(neg, dtype=np.float64).ravel()
    if len(p) == 0 or len(q) == 0:
        raise ValueError(f"need at least one positive and one negative score, got {len(p)} and {len(q)}")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("scores contain NaN or inf")
    return p, q


def average_ranks(x) -> np.ndarray:
    """1-based ranks of x, tied values sharing the average of the ranks they span."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]  # first index of each run of equal values
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(pos, neg) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie) (Mann-Whitney U / (n_pos n_neg), ties as averaged ranks)."""
    p, q = _two_sets(pos, neg)
    r = average_ranks(np.concatenate([p, q]))
    m, n = len(p), len(q)
    return float((r[:m].sum() - m * (m + 1) / 2.0) / (m * n))


def roc_curve(pos, neg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), thresholds descending from +inf (the (0, 0) point); the point at
    threshold t counts scores >= t as positive. One point per distinct score, like sklearn's roc_curve
    with drop_intermediate=False."""
    p, q = _two_sets(pos, neg)
    s = np.concatenate([p, q])
    lab = np.r_[np.ones(len(p)), np.zeros(len(q))]
    order = np.argsort(-s, kind="mergesort")
    s, lab = s[order], lab[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(lab)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / len(q)]
    tpr = np.r_[0.0, tps / len(p)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def tpr_at_fpr(pos, neg, alpha: float, *, mode: str = "interp") -> float:
    """TPR of the ROC at FPR = alpha. "interp": linear interpolation between ROC points (the highest TPR
    where the curve is vertical at alpha); "step": highest TPR among points with FPR < alpha (LiRA's plot.py).
    """
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    fpr, tpr, _ = roc_curve(pos, neg)
    if mode == "step":
        return float(tpr[fpr < alpha].max())
    if mode != "interp":
        raise ValueError(f"mode must be 'interp' or 'step', got {mode!r}")
    at = fpr == alpha
    if at.any():
        return float(tpr[at].max())
    j = int(np.searchsorted(fpr, alpha, side="right"))  # fpr[j - 1] < alpha < fpr[j]
    f0, f1, t0, t1 = fpr[j - 1], fpr[j], tpr[j - 1], tpr[j]
    return float(t0 + (t1 - t0) * (alpha - f0) / (f1 - f0))


def _fpr_key(alpha: float) -> str:
    return f"tpr_at_{alpha * 100:g}pct_fpr"


def roc_summary(pos, neg) -> dict:
    """AUC, TPR at FPR 1% / 0.1% (None where alpha * n_neg < 1), balanced accuracy of "log-LR > 0", and
    the counts that set the resolution."""
    p, q = _two_sets(pos, neg)
    out = {"auc": roc_auc(p, q)}
    for a in FPR_LEVELS:
        out[_fpr_key(a)] = tpr_at_fpr(p, q, a) if a * len(q) >= 1 else None
    out["acc_at_0"] = float(0.5 * ((p > 0).mean() + (q <= 0).mean()))
    out.update(n_pos=len(p), n_neg=len(q), fpr_resolution=1.0 / len(q))
    return out


# ------------------------------------------------------------------------------------------ U-LiRA


def _check_pair(unlearned_phis, retrained_phis, min_k: int) -> tuple[np.ndarray, np.ndarray]:
    u = _phis(unlearned_phis, "unlearned_phis", min_k)
    r = _phis(retrained_phis, "retrained_phis", min_k)
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"unlearned_phis and retrained_phis cover different examples: N = {u.shape[1]} vs "
                         f"{r.shape[1]}")
    return u, r


def ulira(unlearned_phis, retrained_phis, target_phis: Mapping[str, object], *,
          unlearned_targets: Sequence[str] = (), retrained_targets: Sequence[str] = (),
          variance: str = "auto", min_sd: float = MIN_SD, center: str = "mean") -> dict:
    """U-LiRA with shadow pairs fitted once and held-out target models scored.

    unlearned_phis (K_u, N): scaled logits of the N forget examples under shadow models trained with the
    forget class and then unlearned by the audited method; retrained_phis (K_r, N): under shadow models
    trained without it (K >= 2 each). target_phis: name -> (N,) phis of a target model on the same examples.

    Returns {"scores": name -> (N,) per-example log-LR, "mean_score": name -> float, "frac_positive":
    name -> fraction of examples with log-LR > 0, "evaluation": roc_summary() of (example, target) pairs of
    the targets named in `unlearned_targets` (positives, e.g. the audited model) against those in
    `retrained_targets` (negatives, e.g. a retrained model that is not a shadow), plus "n_examples" and the
    target names; None when either list is empty, "settings"}.
    """
    u, r = _check_pair(unlearned_phis, retrained_phis, 2)
    n = u.shape[1]
    kw = {"variance": _resolve_variance(variance, min(u.shape[0], r.shape[0])), "min_sd": min_sd, "center": center}
    mu_u, sd_u = fit_gaussians(u, **kw)
    mu_r, sd_r = fit_gaussians(r, **kw)
    scores = {name: likelihood_ratio(_vector(v, f"target_phis[{name!r}]", n), mu_u, sd_u, mu_r, sd_r)
              for name, v in target_phis.items()}
    for name in (*unlearned_targets, *retrained_targets):
        if name not in scores:
            raise ValueError(f"target {name!r} is not in target_phis")
    if set(unlearned_targets) & set(retrained_targets):
        raise ValueError("a target cannot be both unlearned and retrained")
    evaluation = None
    if unlearned_targets and retrained_targets:
        evaluation = roc_summary(np.concatenate([scores[t] for t in unlearned_targets]),
                                np.concatenate([scores[t] for t in retrained_targets]))
        evaluation.update(n_examples=n, unlearned_targets=list(unlearned_targets),
                          retrained_targets=list(retrained_targets))
    return {"scores": scores,
            "mean_score": {k: float(v.mean()) for k, v in scores.items()},
            "frac_positive": {k: float((v > 0).mean()) for k, v in scores.items()},
            "evaluation": evaluation,
            "settings": {"k_unlearned": u.shape[0], "k_retrained": r.shape[0], "n_examples": n,
                         "variance": kw["variance"],
                         "min_sd": min_sd, "center": center}}


def ulira_loo(unlearned_phis, retrained_phis, *, variance: str = "auto", min_sd: float = MIN_SD,
              center: str = "mean") -> dict:
    """Leave-one-out U-LiRA: each shadow pair k in turn is the target pair, the other K - 1 pairs the shadows.

    unlearned_phis, retrained_phis: (K, N), the same K >= 3 (pair k = unlearned shadow k, retrained shadow k).
    Fold k fits both Gaussians on the pairs != k and scores unlearned shadow k (a positive) and retrained
    shadow k (a negative) on every example: K positives and K negatives per example, no extra models.
    variance="auto" decides on K - 1 (the shadows a fold fits).

    Returns roc_summary() over the K N positives vs K N negatives ("auc", "tpr_at_1pct_fpr",
    "tpr_at_0.1pct_fpr", "acc_at_0", "n_pos", "n_neg", "fpr_resolution") and "k", "n_examples",
    "mean_llr" (N,): per-example mean over folds of the unlearned target's log-LR (the requested per-example
    score; > 0 = unlearned models are recognisable on that example), "mean_llr_retrained" (N,): the same
    for the retrained targets, "per_example_auc" (N,): each example's AUC of its K positives vs its K
    negatives (resolution 1 / K^2), "scores_unlearned" / "scores_retrained" (K, N).
    """
    u, r = _check_pair(unlearned_phis, retrained_phis, 3)
    if u.shape[0] != r.shape[0]:
        raise ValueError(f"ulira_loo needs pairs: K_unlearned = {u.shape[0]} != K_retrained = {r.shape[0]}")
    k, n = u.shape
    kw = {"variance": _resolve_variance(variance, k - 1), "min_sd": min_sd, "center": center}
    su, sr = np.empty((k, n)), np.empty((k, n))
    keep = np.ones(k, dtype=bool)
    for i in range(k):
        keep[i] = False
        mu_u, sd_u = fit_gaussians(u[keep], **kw)
        mu_r, sd_r = fit_gaussians(r[keep], **kw)
        keep[i] = True
        su[i] = likelihood_ratio(u[i], mu_u, sd_u, mu_r, sd_r)
        sr[i] = likelihood_ratio(r[i], mu_u, sd_u, mu_r, sd_r)
    out = roc_summary(su, sr)
    gt = (su.T[:, :, None] > sr.T[:, None, :]).mean((1, 2))  # (N,) over the K x K pairs of each example
    eq = (su.T[:, :, None] == sr.T[:, None, :]).mean((1, 2))
    out.update(k=k, n_examples=n, mean_llr=su.mean(0), mean_llr_retrained=sr.mean(0),
               per_example_auc=gt + 0.5 * eq, scores_unlearned=su, scores_retrained=sr,
               settings={"variance": kw["variance"], "min_sd": min_sd, "center": center})
    return out

"""U-LiRA statistics core (cnr_fast/audit/ulira.py): scaled logit, Gaussian fit, log-LR, ROC/AUC, ulira, ulira_loo.

Analytic AUC used by the synthetic tests (derived here; the simulation agrees with it to < 1e-3):
example i has a mean m_i (drawn at random); unlearned-kind models give phi ~ N(m_i + d, s^2), retrained-kind
phi ~ N(m_i, s^2), K shadows of each kind. With the pooled variance (N large, so s_hat = s), the log-LR of a
target is a_i (phi - c_i) with a_i = D_i / s^2, D_i = mu_u_hat - mu_r_hat ~ N(d, 2 s^2 / K) and
c_i - m_i = (mu_u_hat + mu_r_hat) / 2 - m_i ~ N(d / 2, s^2 / (2K)), independent of D_i. Hence
phi_pos - c ~ N(d/2, s^2 (1 + 1/(2K))), phi_neg - c ~ N(-d/2, s^2 (1 + 1/(2K))), and for two different
examples (all pairs but a 1/N fraction)
    AUC(d, s, K) = E_{D, D' iid N(d, 2 s^2/K)} Phi( (D + D') d / (2 s sqrt((D^2 + D'^2)(1 + 1/(2K)))) ),
which tends to the oracle Phi(d / (sqrt(2) s)) as K -> inf (D = D' = d) and is exactly 1/2 at d = 0. The
leave-one-out fold fits on K - 1 pairs and scores a pair it did not see: same formula with K - 1.
Tolerance: the AUC is a U-statistic over N independent examples; its SD is at most
2 sqrt(AUC (1 - AUC) / N) (each example's contribution is an average of indicators in [0, 1]); the tests
allow 3 times that bound (simulated SDs are 2-6 times below the bound).
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from cnr_fast.audit.ulira import (
    LIRA_EPS,
    MIN_SD,
    PHI_MAX,
    average_ranks,
    fit_gaussians,
    likelihood_ratio,
    roc_auc,
    roc_curve,
    scaled_logit,
    roc_summary,
    tpr_at_fpr,
    ulira,
    ulira_loo,
)

N_SYN = 40000


def np_scaled_logit(z, y, eps=LIRA_EPS):
    """LiRA's score.py in float64: max-shifted explicit softmax, log(p_y + eps) - log(sum_{j != y} p_j + eps)."""
    z = np.asarray(z, dtype=np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    rows = np.arange(len(y))
    py = p[rows, y]
    rest = p.copy()
    rest[rows, y] = 0.0
    with np.errstate(divide="ignore"):
        return np.log(py + eps) - np.log(rest.sum(1) + eps)


def expected_auc(d, s, k, n=801, lim=8.0):
    """AUC(d, s, K) of the module docstring, by a product trapezoid grid in standard-normal space."""
    x = np.linspace(-lim, lim, n)
    w = norm.pdf(x)
    w /= w.sum()
    dd = d + s * math.sqrt(2.0 / k) * x
    a, b = dd[:, None], dd[None, :]
    den = s * np.sqrt((a * a + b * b) * (1 + 1 / (2 * k)))
    arg = (a + b) * d / 2 / np.where(den > 0, den, 1.0)
    return float(w @ norm.cdf(arg) @ w)


def tol(auc, n):
    return 3 * 2 * math.sqrt(max(auc * (1 - auc), 1e-4) / n)


def synthetic(d, s, k, n, seed):
    g = np.random.default_rng(seed)
    m = g.normal(0.0, 3.0, n)
    unl = m + d + s * g.standard_normal((k, n))
    ret = m + s * g.standard_normal((k, n))
    targets = {"audited": m + d + s * g.standard_normal(n), "retrained_heldout": m + s * g.standard_normal(n)}
    return unl, ret, targets


def heldout_auc(d, s, k, seed, **kw):
    unl, ret, targets = synthetic(d, s, k, N_SYN, seed)
    r = ulira(unl, ret, targets, unlearned_targets=["audited"], retrained_targets=["retrained_heldout"], **kw)
    return r


# ------------------------------------------------------------------------------------------ scaled_logit


def test_scaled_logit_matches_explicit_softmax():
    g = np.random.default_rng(0)
    z = g.normal(0, 4, (300, 10))
    y = g.integers(0, 10, 300)
    ours = scaled_logit(torch.from_numpy(z), torch.from_numpy(y))
    assert ours.dtype == torch.float64 and ours.shape == (300,)
    np.testing.assert_allclose(ours.numpy(), np_scaled_logit(z, y), rtol=1e-12, atol=1e-12)
    exact = scaled_logit(torch.from_numpy(z), torch.from_numpy(y), eps=0.0).numpy()
    np.testing.assert_allclose(exact, np_scaled_logit(z, y, eps=0.0), rtol=1e-11, atol=1e-11)
    rest = z.copy()
    rest[np.arange(300), y] = -np.inf
    lse_rest = np.log(np.exp(rest - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    np.testing.assert_allclose(exact, z[np.arange(300), y] - lse_rest, rtol=1e-11, atol=1e-11)  # z_y - lse_{j!=y}
    # float32 logits give the float64 computation on the float32 values
    z32 = torch.from_numpy(z).float()
    np.testing.assert_allclose(scaled_logit(z32, torch.from_numpy(y)).numpy(),
                               np_scaled_logit(z32.double().numpy(), y), rtol=1e-12, atol=1e-12)


def test_scaled_logit_extreme_logits_finite_and_match_lira():
    z = np.array([[0.0, 0.0, 0.0],
                  [60.0, 0.0, -5.0],  # p_y = 1 - 1e-26: naive log(1 - p) is -inf in float64
                  [-60.0, 0.0, 3.0],
                  [1000.0, 0.0, 0.0],  # exp overflow territory
                  [-1000.0, 0.0, 0.0],
                  [1e30, -1e30, 0.0],
                  [0.0, -np.inf, 1.0],  # LogitMask mask on a non-true class
                  [-np.inf, 2.0, 1.0],  # LogitMask mask on the true class
                  [5.0, -np.inf, -np.inf],  # every other class masked
                  [np.inf, 0.0, 0.0]])
    y = np.zeros(len(z), dtype=np.int64)
    ours = scaled_logit(torch.from_numpy(z), torch.from_numpy(y)).numpy()
    assert np.isfinite(ours).all() and np.abs(ours).max() <= PHI_MAX + 1e-9
    zc = np.clip(z, -1e4, 1e4)  # the documented clamp, then LiRA's own formula
    np.testing.assert_allclose(ours, np_scaled_logit(zc, y), rtol=1e-12, atol=1e-12)
    assert ours[1] == pytest.approx(60.0 - math.log(1 + math.exp(-5.0)), abs=1e-9)
    assert ours[3] == pytest.approx(PHI_MAX, abs=1e-9) and ours[4] == pytest.approx(-PHI_MAX, abs=1e-9)
    assert ours[7] == pytest.approx(-PHI_MAX, abs=1e-9)  # masked forget logit: the floor, not -inf
    exact = scaled_logit(torch.from_numpy(z), torch.from_numpy(y), eps=0.0).numpy()
    assert np.isfinite(exact).all()
    assert exact[7] == pytest.approx(-1e4 - math.log(math.exp(2.0) + math.exp(1.0)), abs=1e-6)
    assert exact[1] == pytest.approx(60.0 - math.log(1 + math.exp(-5.0)), abs=1e-9)


def test_scaled_logit_rejects_bad_input():
    z, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="NaN"):
        scaled_logit(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        scaled_logit(z, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="2 classes"):
        scaled_logit(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        scaled_logit(z, y[:3])
    with pytest.raises(ValueError, match="integer"):
        scaled_logit(z, y.float())


# ------------------------------------------------------------------------------------------ fit / log-LR


def test_fit_gaussians_per_example_pooled_and_floor():
    g = np.random.default_rng(1)
    x = g.normal(2.0, 1.5, (12, 50))
    mu, sd = fit_gaussians(x, variance="per_example")
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sd, x.std(0, ddof=1))
    mu_m, _ = fit_gaussians(x, variance="per_example", center="median")
    np.testing.assert_allclose(mu_m, np.median(x, 0))
    _, sdp = fit_gaussians(x, variance="pooled")
    np.testing.assert_allclose(sdp, np.sqrt(x.var(0, ddof=1).mean()))
    _, sda = fit_gaussians(x)  # auto: K = 12 < 64 -> pooled
    np.testing.assert_allclose(sda, sdp)
    _, sdc = fit_gaussians(np.full((5, 7), -PHI_MAX))
    assert (sdc == MIN_SD).all()
    _, sdf = fit_gaussians(np.full((5, 7), 1.0), min_sd=0.25)
    assert (sdf == 0.25).all()


def test_likelihood_ratio_matches_scipy():
    g = np.random.default_rng(2)
    n = 500
    mu_u, mu_r = g.normal(0, 3, n), g.normal(0, 3, n)
    sd_u, sd_r = g.uniform(0.1, 3, n), g.uniform(0.1, 3, n)
    phi = mu_u + sd_u * g.standard_normal(n)
    ref = norm.logpdf(phi, mu_u, sd_u) - norm.logpdf(phi, mu_r, sd_r)
    np.testing.assert_allclose(likelihood_ratio(phi, mu_u, sd_u, mu_r, sd_r), ref, rtol=1e-10, atol=1e-10)
    ref_scalar = norm.logpdf(phi, mu_u, 0.7) - norm.logpdf(phi, mu_r, 1.3)
    np.testing.assert_allclose(likelihood_ratio(phi, mu_u, 0.7, mu_r, 1.3), ref_scalar, rtol=1e-10, atol=1e-10)
    # end to end on synthetic Gaussians: fit, then the ratio of the fitted densities
    unl = g.normal(1.0, 0.8, (16, n)) + mu_r
    ret = g.normal(0.0, 1.2, (16, n)) + mu_r
    t = mu_r + 0.5
    r = ulira(unl, ret, {"t": t}, variance="per_example")
    ref_fit = (norm.logpdf(t, unl.mean(0), unl.std(0, ddof=1)) - norm.logpdf(t, ret.mean(0), ret.std(0, ddof=1)))
    np.testing.assert_allclose(r["scores"]["t"], ref_fit, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="> 0"):
        likelihood_ratio(phi, mu_u, 0.0, mu_r, 1.0)


# ------------------------------------------------------------------------------------------ ROC / AUC


def _score_sets():
    g = np.random.default_rng(3)
    yield g.normal(1, 1, 300), g.normal(0, 1, 700)  # continuous
    yield g.integers(0, 5, 200).astype(float) + 1, g.integers(0, 5, 350).astype(float)  # heavy ties
    yield np.zeros(10), np.zeros(20)  # all tied
    yield np.array([1.0]), np.array([0.0, 2.0, 1.0])  # tiny, tie across the classes
    yield g.normal(0.3, 1, 2000), g.normal(0, 1, 1000)  # alpha * n_neg lands on a grid point


def test_auc_and_roc_match_sklearn():
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    for p, q in _score_sets():
        s = np.r_[p, q]
        lab = np.r_[np.ones(len(p)), np.zeros(len(q))]
        np.testing.assert_allclose(average_ranks(s), rankdata(s, method="average"))
        assert roc_auc(p, q) == pytest.approx(roc_auc_score(lab, s), abs=1e-12)
        fpr, tpr, thr = roc_curve(p, q)
        sf, st, sthr = sk_roc_curve(lab, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sf)
        np.testing.assert_allclose(tpr, st)
        np.testing.assert_array_equal(thr[1:], sthr[1:])
        assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(p, q), abs=1e-12)
        sf2, st2, _ = sk_roc_curve(lab, s)  # sklearn's default drops collinear points: same interpolation
        for a in (0.01, 0.001, 0.05, 0.1, 0.5):
            ours = tpr_at_fpr(p, q, a)
            assert ours == pytest.approx(float(np.interp(a, sf, st)), abs=1e-12)
            assert ours == pytest.approx(float(np.interp(a, sf2, st2)), abs=1e-12)
            assert tpr_at_fpr(p, q, a, mode="step") == pytest.approx(float(st[np.where(sf < a)[0][-1]]))


def test_roc_summary_reports_resolution():
    g = np.random.default_rng(4)
    small = roc_summary(g.normal(1, 1, 50), g.normal(0, 1, 500))
    assert small["n_neg"] == 500 and small["fpr_resolution"] == pytest.approx(1 / 500)
    assert small["tpr_at_1pct_fpr"] is not None and small["tpr_at_0.1pct_fpr"] is None  # 0.001 * 500 < 1
    big = roc_summary(g.normal(1, 1, 50), g.normal(0, 1, 1000))
    assert big["tpr_at_0.1pct_fpr"] is not None
    with pytest.raises(ValueError):
        roc_summary([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([np.nan], [1.0])


# ------------------------------------------------------------------------------------------ synthetic AUC


@pytest.mark.parametrize("d,s,k", [(1.0, 1.0, 16), (0.5, 1.0, 8), (1.0, 2.0, 12)])
def test_ulira_heldout_auc_matches_analytic(d, s, k):
    r = heldout_auc(d, s, k, seed=10 + k, variance="pooled")
    ev = r["evaluation"]
    exp = expected_auc(d, s, k)
    assert ev["n_pos"] == ev["n_neg"] == N_SYN and ev["n_examples"] == N_SYN
    assert abs(ev["auc"] - exp) < tol(exp, N_SYN), (ev["auc"], exp)
    assert ev["auc"] < norm.cdf(d / (math.sqrt(2) * s)) + tol(exp, N_SYN)  # never above the oracle
    assert r["mean_score"]["audited"] > 0 > r["mean_score"]["retrained_heldout"]
    assert ev["tpr_at_1pct_fpr"] is not None and ev["tpr_at_0.1pct_fpr"] is not None


@pytest.mark.parametrize("d,s,k", [(1.0, 1.0, 16), (0.5, 1.0, 8)])
def test_ulira_loo_auc_matches_analytic(d, s, k):
    unl, ret, _ = synthetic(d, s, k, N_SYN, seed=20 + k)
    r = ulira_loo(unl, ret, variance="pooled")
    exp = expected_auc(d, s, k - 1)
    assert r["n_pos"] == r["n_neg"] == k * N_SYN and r["k"] == k
    assert abs(r["auc"] - exp) < tol(exp, N_SYN), (r["auc"], exp)
    assert r["mean_llr"].shape == (N_SYN,) and r["mean_llr"].mean() > 0 > r["mean_llr_retrained"].mean()
    assert r["per_example_auc"].mean() > 0.5
    for i in (0, 7, 123):  # per-example AUC is that example's K positives vs K negatives
        assert r["per_example_auc"][i] == pytest.approx(
            roc_auc(r["scores_unlearned"][:, i], r["scores_retrained"][:, i]), abs=1e-12)
    from sklearn.metrics import roc_curve as sk_roc_curve

    s_all = np.r_[r["scores_unlearned"].ravel(), r["scores_retrained"].ravel()]
    lab = np.r_[np.ones(k * N_SYN), np.zeros(k * N_SYN)]
    fpr, tpr, _ = sk_roc_curve(lab, s_all)
    assert r["tpr_at_1pct_fpr"] == pytest.approx(float(np.interp(0.01, fpr, tpr)), abs=1e-12)
    assert r["tpr_at_0.1pct_fpr"] == pytest.approx(float(np.interp(0.001, fpr, tpr)), abs=1e-12)


def test_null_control_d0_is_half_and_band_excludes_a_real_effect():
    band = tol(0.5, N_SYN)
    held = heldout_auc(0.0, 1.0, 8, seed=30, variance="pooled")["evaluation"]
    unl, ret, _ = synthetic(0.0, 1.0, 8, N_SYN, seed=31)
    loo = ulira_loo(unl, ret, variance="pooled")
    for name, ev in (("held-out", held), ("loo", loo)):
        assert abs(ev["auc"] - 0.5) < band, (name, ev["auc"])
        assert abs(ev["acc_at_0"] - 0.5) < band, (name, ev["acc_at_0"])
        assert abs(ev["tpr_at_1pct_fpr"] - 0.01) < 0.01, (name, ev["tpr_at_1pct_fpr"])
    # the same band rejects a small real effect (the null test can fail), in both evaluations
    assert expected_auc(0.3, 1.0, 8) - 0.5 > 2 * band
    assert heldout_auc(0.3, 1.0, 8, seed=32, variance="pooled")["evaluation"]["auc"] - 0.5 > band
    unl, ret, _ = synthetic(0.3, 1.0, 8, N_SYN, seed=33)
    assert ulira_loo(unl, ret, variance="pooled")["auc"] - 0.5 > band


def test_per_example_variance_is_weaker_but_above_chance():
    """Per-example variances (7-15 dof) add noise to the score: below the pooled AUC, above chance."""
    d, s, k = 1.0, 1.0, 16
    per = heldout_auc(d, s, k, seed=40, variance="per_example")["evaluation"]["auc"]
    pooled = heldout_auc(d, s, k, seed=40, variance="pooled")["evaluation"]["auc"]
    assert 0.5 + tol(0.5, N_SYN) < per < pooled
    null = heldout_auc(0.0, s, k, seed=41, variance="per_example")["evaluation"]["auc"]
    assert abs(null - 0.5) < tol(0.5, N_SYN)


# ------------------------------------------------------------------------------------------ degenerate


def test_degenerate_inputs_raise_or_stay_finite():
    g = np.random.default_rng(5)
    x = g.normal(size=(4, 30))
    with pytest.raises(ValueError, match="K = 1"):
        fit_gaussians(x[:1])
    with pytest.raises(ValueError, match="K = 1"):
        ulira(x[:1], x, {})
    with pytest.raises(ValueError, match="K = 2"):
        ulira_loo(x[:2], x[:2])
    with pytest.raises(ValueError, match="pairs"):
        ulira_loo(x[:3], x)
    with pytest.raises(ValueError, match="different examples"):
        ulira(x, x[:, :10], {})
    with pytest.raises(ValueError, match="NaN or inf"):
        ulira(np.where(x > 2, np.nan, x), x, {})
    with pytest.raises(ValueError, match="NaN or inf"):
        ulira(x, x, {"t": np.full(30, np.inf)})
    with pytest.raises(ValueError, match="not in target_phis"):
        ulira(x, x, {"t": x[0]}, unlearned_targets=["t"], retrained_targets=["missing"])
    with pytest.raises(ValueError, match="no examples"):
        fit_gaussians(np.zeros((4, 0)))
    assert ulira(x, x, {"t": x[0]}, unlearned_targets=["t"])["evaluation"] is None  # one kind only: no AUC


def test_constant_phis_give_documented_finite_results():
    n, k = 40, 6
    masked = np.full((k, n), -PHI_MAX)  # every LogitMask shadow saturates at the floor
    ret = np.tile(np.linspace(-6, -1, n), (k, 1))  # retrained shadows: constant per example
    r = ulira(masked, ret, {"lm": masked[0], "rt": ret[0]}, unlearned_targets=["lm"], retrained_targets=["rt"])
    for v in r["scores"].values():
        assert np.isfinite(v).all()
    assert (r["scores"]["lm"] > 0).all() and (r["scores"]["rt"] < 0).all()
    assert r["evaluation"]["auc"] == 1.0 and r["evaluation"]["acc_at_0"] == 1.0
    loo = ulira_loo(masked, ret)
    assert loo["auc"] == 1.0 and np.isfinite(loo["mean_llr"]).all()
    # both kinds identical and constant: log-LR exactly 0, every score tied -> AUC 1/2, TPR = FPR
    same = ulira_loo(ret, ret.copy())
    assert (same["scores_unlearned"] == 0).all() and same["auc"] == 0.5 and same["acc_at_0"] == 0.5
    assert same["tpr_at_1pct_fpr"] == pytest.approx(0.01)

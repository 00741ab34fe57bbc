"""KLOM (cnr_fast/audit/klom.py) against the benchmark's definition written out here, and end to end over
U-LiRA's shadow pairs (experiments/shadows.py).

The reference below follows easydub/EasyDUB-code easydub/eval.py `binned_kl_divergence` line by line, one
example at a time in float64 (np.clip, scalar np.linspace over the two sets' joint range, np.digitize,
counts of indices 1..bins only, the eps floor where p > 0, sum of p log(p / q)); margins are
z_y - logsumexp_{j != y} z_j by scipy; P95 is np.percentile. Tolerances: 1e-12 (the same float64 operations
in another order); end to end 1e-9 relative (margins by torch vs scipy differ in the last bits; no sample
sits that close to an interior bin edge).
"""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from cnr_fast.audit import klom as K


def ref_binned_kl(p_arr, q_arr, bin_count=20, eps=1e-5, min_val=-100.0, max_val=100.0):
    p_arr = np.clip(np.asarray(p_arr, dtype=np.float64), min_val, max_val)
    q_arr = np.clip(np.asarray(q_arr, dtype=np.float64), min_val, max_val)
    start = min(p_arr.min(), q_arr.min())
    end = max(p_arr.max(), q_arr.max())
    if start >= end:
        end = start + 1
    bins = np.linspace(start, end, bin_count + 1)
    pc = np.array([np.sum(np.digitize(p_arr, bins) == i) for i in range(1, bin_count + 1)])
    qc = np.array([np.sum(np.digitize(q_arr, bins) == i) for i in range(1, bin_count + 1)])
    pp = pc / pc.sum() if pc.sum() > 0 else np.zeros(bin_count)
    qp = qc / qc.sum() if qc.sum() > 0 else np.zeros(bin_count)
    qs = np.where(pp > 0, np.maximum(qp, eps), qp)
    mask = pp > 0
    return float(np.sum(pp[mask] * np.log(pp[mask] / qs[mask])))


def ref_klom(unlearned, oracle):
    return np.array([ref_binned_kl(unlearned[:, i], oracle[:, i]) for i in range(unlearned.shape[1])])


def _synthetic(rng, k_u=8, k_o=8, n=400):
    """Columns of every kind: overlapping, shifted, disjoint, ties, values past the clip, all equal."""
    mu = rng.normal(0, 5, n)
    u = mu + rng.normal(0, 1, (k_u, n)) + rng.choice([0.0, 1.0, 30.0], n)
    o = mu + rng.normal(0, 1, (k_o, n))
    u[:, :20] = np.round(u[:, :20])  # ties
    o[:, :20] = np.round(o[:, :20])
    u[:, 20:40] *= 40  # past [-100, 100]
    u[:, 40:50] = 3.0  # every sample equal in both sets
    o[:, 40:50] = 3.0
    u[:, 50:60] = -np.inf  # LogitMask margins
    return u, o


@pytest.mark.parametrize("k_u,k_o", [(8, 8), (4, 7), (100, 100)])
def test_klom_matches_the_reference_code(k_u, k_o):
    rng = np.random.default_rng(k_u + k_o)
    u, o = _synthetic(rng, k_u, k_o)
    got = K.klom(u, o)
    np.testing.assert_allclose(got, ref_klom(u, o), rtol=1e-12, atol=1e-12)
    assert K.percentile(got) == pytest.approx(np.percentile(ref_klom(u, o), 95), rel=1e-12)
    assert K.summary({"forget": u}, {"forget": o}) == {"forget": pytest.approx(np.percentile(got, 95), rel=1e-12)}


def test_klom_direction_analytic_values_and_the_dropped_maximum():
    rng = np.random.default_rng(0)
    u, o = _synthetic(rng)
    # KL(unlearned || oracle), not the other way round
    np.testing.assert_allclose(K.klom(u, o), ref_klom(u, o), rtol=1e-12, atol=1e-12)
    assert not np.allclose(K.klom(u, o), ref_klom(o, u))
    assert np.allclose(K.klom(o, o), 0.0)  # the oracle against itself: 0 (EasyDUB reproduce.py oracle_klom)
    # p all at the bottom, q all at the top: q's samples fall on the last edge and are not counted, so q is
    # floored at eps in p's bin: KL = log(1 / eps)
    lo, hi = np.full((8, 1), -5.0), np.full((8, 1), 5.0)
    assert K.klom(lo, hi)[0] == pytest.approx(np.log(1e5), rel=1e-12)
    # the other way round p is the set on the top edge: none of it counted, the reference code reads 0
    assert K.klom(hi, lo)[0] == 0.0 == ref_binned_kl(hi[:, 0], lo[:, 0])
    # p spread over K separate bins, q elsewhere: sum (1/K') log(1 / (K' eps)) with the maximum dropped
    p = np.arange(0.0, 80.0, 10.0).reshape(8, 1)  # bins of width 5 over [-30, 70]: one bin each, 70 dropped
    q = np.full((8, 1), -30.0)
    assert K.klom(p, q)[0] == pytest.approx(np.log(1 / (7 * 1e-5)), rel=1e-12)  # 7 counted, q floored at eps
    with pytest.raises(ValueError):
        K.klom(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError):
        K.klom(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_margins_are_the_benchmarks():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 20, (300, 10))
    y = rng.integers(0, 10, 300)
    rows = np.arange(300)
    rest = z.copy()
    rest[rows, y] = -np.inf
    want = z[rows, y] - logsumexp(rest, axis=1)
    np.testing.assert_allclose(K.margins(torch.tensor(z), torch.tensor(y)), want, rtol=1e-12, atol=1e-12)


def test_shadow_summary_halves_groups_and_original():
    rng = np.random.default_rng(4)
    u, r = _synthetic(rng, 8, 8)
    o = r + 50.0
    mask = rng.random(u.shape[1]) < 0.3
    res = K.shadow_summary({"forget": u, "val": u}, {"forget": r, "val": r}, {"forget": o, "val": o},
                           groups={"val_part": ("val", mask)})
    p95 = lambda a: np.percentile(a, 95)
    assert res["audited"]["forget"] == pytest.approx(p95(ref_klom(u, r)), rel=1e-12)
    assert res["audited"]["val_part"] == pytest.approx(p95(ref_klom(u[:, mask], r[:, mask])), rel=1e-12)
    assert res["original"]["forget"] == pytest.approx(p95(ref_klom(o, r)), rel=1e-12)
    assert res["null"]["k"] == 4
    assert res["null"]["null"]["forget"] == pytest.approx(p95(ref_klom(r[:4], r[4:])), rel=1e-12)
    assert res["null"]["audited"]["forget"] == pytest.approx(p95(ref_klom(u[:4], r[4:])), rel=1e-12)
    assert "null" not in K.shadow_summary({"f": u[:7]}, {"f": r[:7]})  # K/2 = 3: below NULL_MIN_HALF


# ----------------------------------------------------------------------------------- over shadow pairs


@pytest.fixture(scope="module")
def attack(tmp_path_factory):
    from cnr_fast.audit.verdict import NULL
    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset
    from cnr_fast.experiments import methods as M
    from cnr_fast.experiments.shadows import ulira_attack
    from cnr_fast.references import obtain_reference

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = RunConfig().replace(method="lm", data={"dataset": "digits", "image_size": 8}, train={"epochs": 1})
        ds = load_dataset(cfg.data)
        cache = str(tmp_path_factory.mktemp("klom-cache"))
        ref = {kind: obtain_reference(kind, cfg, ds, "cpu", cache, True)[0] for kind in ("original", "retrained")}
        null = obtain_reference("retrained", cfg.replace(seed=99), ds, "cpu", cache, True)[0]
        unlearned = M.unlearn_model("lm", ref["original"], ds, cfg, device="cpu", quiet=True)[0]
        targets = {"unlearned": unlearned, "retrained": ref["retrained"], NULL: null, "original": ref["original"]}
        out = ulira_attack("lm", cfg, ds, targets, pairs=4, device="cpu", cache=cache, quiet=True)
        return cfg, ds, cache, out
    finally:
        torch.set_num_threads(before)


def _margins_scipy(model, split):
    from cnr_fast.train import predict

    z = predict(model, split, device="cpu").double().numpy()
    y = split.y.numpy()
    rows = np.arange(len(y))
    rest = z.copy()
    rest[rows, y] = -np.inf
    return z[rows, y] - logsumexp(rest, axis=1)


def test_ulira_attack_carries_klom_of_the_shadow_pairs(attack):
    from cnr_fast.experiments import methods as M
    from cnr_fast.experiments.shadows import KLOM_MAX, klom_splits
    from cnr_fast.references import obtain_reference

    cfg, ds, cache, out = attack
    k = out["klom"]
    splits, held = klom_splits(ds, [2], cfg.seed)
    # the benchmark's splits: every forget-class training example; retain-class training and held-out examples
    assert held == "val" and k["held_out_split"] == "val"
    assert len(splits["forget"]) == int((ds.train.y == 2).sum()) == k["examples"]["forget"] == out["n_examples"]
    assert (splits["retain"].y != 2).all() and len(splits["retain"]) == min(KLOM_MAX, int((ds.train.y != 2).sum()))
    assert len(splits["val"]) == min(KLOM_MAX, len(ds.val))
    torch.testing.assert_close(klom_splits(ds, [2], cfg.seed)[0]["retain"].x, splits["retain"].x)  # seeded
    # recomputed here from the shadow models themselves (the cache holds them; LM is deterministic)
    m = {kind: {s: [] for s in splits} for kind in ("unlearned", "retrained", "original")}
    for seed in out["shadow_seeds"]:
        scfg = cfg.replace(seed=seed)
        orig = obtain_reference("original", scfg, ds, "cpu", cache, True)[0]
        models = {"original": orig, "retrained": obtain_reference("retrained", scfg, ds, "cpu", cache, True)[0],
                  "unlearned": M.unlearn_model("lm", orig, ds, scfg, device="cpu", quiet=True)[0]}
        for kind, model in models.items():
            for s, sp in splits.items():
                m[kind][s].append(_margins_scipy(model, sp))
    m = {kind: {s: np.stack(v) for s, v in per.items()} for kind, per in m.items()}
    is_f = (splits["val"].y == 2).numpy()
    for kind, part in (("unlearned", "audited"), ("original", "original")):
        for s in ("forget", "retain", "val"):
            want = np.percentile(ref_klom(m[kind][s], m["retrained"][s]), 95)
            assert k[part][s] == pytest.approx(want, rel=1e-9), (kind, s)
        want = np.percentile(ref_klom(m[kind]["val"][:, is_f], m["retrained"]["val"][:, is_f]), 95)
        assert k[part]["val_forget_classes"] == pytest.approx(want, rel=1e-9)
    assert "null" not in k  # 2 models a side: too few for the split-half null (K.NULL_MIN_HALF)
    # LogitMask's forget margins sit at the clip floor on every shadow, the retrained ones above it
    assert k["audited"]["forget"] == pytest.approx(np.log(1e5), rel=1e-9)
    assert k["pairs"] == 4 and k["settings"]["direction"] == "KL(unlearned || retrained)"


def test_klom_is_shown_beside_ulira_in_both_reports(attack):
    from cnr_fast.audit.report import _tables, fmt, klom_sentence
    from cnr_fast.experiments.reports import _rate, ulira_md

    _, _, _, out = attack
    k = out["klom"]
    md = "\n".join(ulira_md({"per_seed_ulira": {"lm": [out]}, "seeds": [0]}))
    assert "## KLOM over the same shadow pairs" in md
    row = next(line for line in md.splitlines() if line.startswith("| lm | 0 | 4 |") and "KLOM" not in line
               and line.count("|") == 10)
    for v in (k["audited"]["forget"], k["audited"]["retain"], k["audited"]["val"], k["original"]["forget"]):
        assert _rate(v) in row
    tables = _tables({"metrics": {"original": {"forget_acc": 1.0}}, "references": {}, "ulira": out})
    _, head, rows = next(t for t in tables if t[0].startswith("KLOM"))
    assert head[1:4] == ["forget", "retain", "val"] and rows[0][1] == fmt(k["audited"]["forget"])
    assert fmt(k["audited"]["forget"]) in klom_sentence(k, "lm")


def test_report_says_when_too_few_pairs_make_klom_meaningless(capsys):
    """Below 2 * NULL_MIN_HALF pairs the KLOM table carries a plain warning (and --ulira-pairs logs one);
    at 8 pairs it shows the split-half null instead."""
    from cnr_fast.audit.klom import NULL_MIN_HALF
    from cnr_fast.cli.args import note_klom_pairs
    from cnr_fast.experiments.reports import klom_md

    def result(pairs, null):
        k = {"pairs": pairs, "audited": {"forget": 11.5, "retain": 10.8, "val": 11.5}}
        if null:
            k["null"] = {"k": pairs // 2, "audited": {"forget": 9.0}, "null": {"forget": 8.8}}
        return {"seeds": [0], "per_seed_ulira": {"cnr": [{"klom": k}]}}

    few = "\n".join(klom_md(result(3, False)))
    assert "cannot tell a method from retraining" in few and f"--ulira-pairs {2 * NULL_MIN_HALF}" in few
    enough = "\n".join(klom_md(result(8, True)))
    assert "cannot tell" not in enough and "4 retrained shadows against the other 4" in enough
    capsys.readouterr()
    note_klom_pairs(3)
    assert "KLOM" in capsys.readouterr().err
    note_klom_pairs(8)
    assert "KLOM" not in capsys.readouterr().err

"""The fair comparison: splits, reference initialisation, one forward pass, unbiased CKA with a null,
coordinate-bound metrics, and the new baselines against independent computations."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnr_fast import experiments as E
from cnr_fast.config import DataConfig, RunConfig
from cnr_fast.data import Split, carve_validation, load_dataset

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_validation_split_is_disjoint_stratified_and_fixed():
    a = load_dataset(DataConfig(dataset="digits", image_size=8, val_fraction=0.2))
    b = load_dataset(DataConfig(dataset="digits", image_size=8, val_fraction=0.2))
    none = load_dataset(DataConfig(dataset="digits", image_size=8, val_fraction=0.0))
    assert none.val is None and len(none.train) == len(a.train) + len(a.val)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)  # seeded, run-independent
    # disjoint: no image row of validation is among train's or test's rows (digits has few duplicates,
    # so compare (image, label) pairs by hash, counting multiplicity)
    def keys(s):
        return {(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(s.x, s.y)}

    assert len(keys(a.val) & keys(a.test)) <= 2 and len(a.val) + len(a.train) + len(a.test) == 1797
    counts_val = torch.bincount(a.val.y, minlength=10).float()
    counts_all = torch.bincount(none.train.y, minlength=10).float()
    assert torch.allclose(counts_val / counts_all, torch.full((10,), 0.2), atol=0.02)
    tr, va = carve_validation(Split(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10) % 2), 0.2)
    assert len(tr) == 8 and len(va) == 2 and sorted(va.y.tolist()) == [0, 1]


def test_reference_seeds_independent_by_default_and_rfs_never_the_reference():
    cfg = RunConfig(seed=3)
    o, r, n, f = (E.reference_seeds(k, cfg) for k in ("original", "retrained", "retrained_null", "rfs"))
    assert o == (3, 3)
    assert len({o[0], r[0], n[0], f[0]}) == 4  # four different initialisations
    shared = cfg.replace(train={"reference_init": "shared"})
    assert E.reference_seeds("retrained", shared) == (3, 3)  # the original's init and data order
    rfs_init, rfs_order = E.reference_seeds("rfs", shared)
    assert rfs_init == 3 and rfs_order != 3  # shared init, but never the reference's run
    assert E.reference_key("retrained", cfg, _fake_ds()) != E.reference_key("retrained", shared, _fake_ds())


def _fake_ds():
    class D:
        def fingerprint(self):
            return {"dataset": "x"}

    return D()


class CountingModel(torch.nn.Module):
    """Records the batch size of every forward call of a tiny classifier (BatchNorm included)."""

    def __init__(self, classes=3):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, classes))
        self.calls = []

    def forward(self, x):
        self.calls.append(len(x))
        return self.net(x)


def _tiny_ds(n=48, classes=3, size=8, seed=0):
    from cnr_fast.data import Dataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return Dataset("tiny", Split(x, y), Split(x[:12], y[:12]), classes, [str(c) for c in range(classes)],
                   val=Split(x[12:24], y[12:24]))


@pytest.mark.parametrize("method", ["gau", "kdu"])
def test_gau_kdu_one_forward_pass_over_forget_and_retain(method):
    from cnr_fast.experiments.methods import get

    ds = _tiny_ds()
    model = CountingModel()
    cfg = RunConfig().replace(baseline={"epochs": 1, "stabilize_epochs": 0, "batch_size": 8, "lr": 1e-3})
    out, _ = get(method).run(model, ds, [1], cfg, device=CPU, quiet=True)
    calls = out.calls  # the trained copy's record: the copy was made before training
    n_retain, n_forget = 32, 16
    steps = -(-n_retain // 8)
    train_calls = [c for c in calls[len(model.calls):]]
    # every training step is ONE call on forget (8) + retain (8) examples together
    student = [c for c in train_calls if c == 16]
    assert len(student) == steps, calls
    assert all(c in (8, 16) for c in train_calls)  # 8 = KDU's teacher on a retain or forget batch alone
    assert n_forget == 16


def test_cnr_reset_one_forward_pass_over_synthetic_and_retain():
    from cnr_fast.cnr.reset import reset
    from cnr_fast.config import ResetConfig

    ds = _tiny_ds()
    retain = [0, 2]
    split = ds.train.of_classes(retain)  # 32 images
    synth = torch.rand(10, 1, 8, 8) * 2 - 1
    model = CountingModel()
    cfg = ResetConfig(epochs=2, stabilize_epochs=0, batch_size=8, synth_batch_size=4, lr=1e-3)
    out, _ = reset(model, split, synth, retain, cfg, device=CPU)
    calls = out.calls[len(model.calls):]
    # every reset step is ONE call on 4 synthetic + 8 retain examples together: 2 epochs x 4 steps
    assert calls == [12] * 8, calls


def test_unbiased_cka_of_unrelated_features_is_near_zero_where_biased_is_not():
    g = torch.Generator().manual_seed(0)
    from cnr_fast.audit.cka import cka_per_tap

    def relu_feats(n, d):
        return torch.relu(torch.randn(n, d, generator=g, dtype=torch.float64))

    for n in (100, 400):
        x, y = {"L0": relu_feats(n, 3000)}, {"L0": relu_feats(n, 3000)}
        biased = cka_per_tap(x, y, unbiased=False)["L0"]
        unbiased = cka_per_tap(x, y, unbiased=True)["L0"]
        assert biased > 0.5  # the bias the audit used to carry
        assert abs(unbiased) < 0.05
    same = cka_per_tap(x, {"L0": 2.0 * x["L0"]}, unbiased=True)["L0"]
    assert same == pytest.approx(1.0, abs=1e-9)


def test_unbiased_cka_matches_float64_numpy_formula():
    from cnr_fast.audit.cka import cka_per_tap

    rng = np.random.default_rng(5)
    x = rng.normal(size=(37, 11))
    y = x @ rng.normal(size=(11, 9)) + rng.normal(size=(37, 9))

    def hsic1(k, l_):
        n = len(k)
        k, l_ = k.copy(), l_.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l_, 0)
        one = np.ones(n)
        return (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one @ k @ l_ @ one)) / (n * (n - 3))

    k, l_ = x @ x.T, y @ y.T
    expected = hsic1(k, l_) / np.sqrt(hsic1(k, k) * hsic1(l_, l_))
    ours = cka_per_tap({"a": torch.from_numpy(x).float()}, {"a": torch.from_numpy(y).float()}, unbiased=True)["a"]
    assert ours == pytest.approx(expected, abs=1e-5)


def test_audit_equal_n_null_reference_and_no_coordinate_metrics_for_independent_models():
    from cnr_fast.audit import audit_models
    from cnr_fast.models import build_model

    ds = load_dataset(DataConfig(dataset="digits", image_size=8))

    def m(seed):
        torch.manual_seed(seed)
        return build_model("resnet18", 10, 1, 8, 0.0625).eval()

    original = m(0)
    models = {"original": original, "unlearned": copy.deepcopy(original), "retrained": m(1)}
    out = audit_models(models, ds, [2], device=CPU, retrained="retrained", figures=False, quiet=True, relearn=False,
                       shots=(1,), null_model=m(2))
    s = out["settings"]
    assert s["cka_examples"]["retain"] == s["cka_examples"]["forget"] == int((ds.test.y == 2).sum())
    assert s["cka_estimator"] == "unbiased"
    assert set(out["references"]["cka_null"]["pos"]) == {"L0", "L1", "L2", "L3", "L4"}
    assert "transfer_probe_acc" not in out["metrics"]["retrained"]
    assert "selectivity_delta" not in out["metrics"]["retrained"]
    assert set(out["metrics"]["unlearned"]["transfer_probe_acc"]) == {"L0", "L1", "L2", "L3", "L4"}
    assert out["metrics"]["unlearned"]["cka_neg"]["L4"] == pytest.approx(1.0, abs=1e-9)


def test_ssd_dampening_matches_the_published_rule():
    from cnr_fast.baselines.ssd import dampen

    lin = torch.nn.Linear(3, 2)
    w0 = lin.weight.detach().clone().numpy().astype(np.float64)
    b0 = lin.bias.detach().clone().numpy().astype(np.float64)
    i_d = [torch.tensor([[1.0, 0.1, 2.0], [0.0, 1.0, 1.0]]), torch.tensor([1.0, 1.0])]
    i_f = [torch.tensor([[20.0, 0.5, 10.0], [3.0, 11.0, 5.0]]), torch.tensor([5.0, 30.0])]
    info = dampen(lin, i_d, i_f, alpha=10.0, lam=1.0)
    exp_w = w0.copy()
    for (r, c) in [(0, 0), (1, 0), (1, 1)]:  # i_f > 10 * i_d
        exp_w[r, c] *= min(1.0 * float(i_d[0][r, c]) / float(i_f[0][r, c]), 1.0)
    exp_b = b0.copy()
    exp_b[1] *= 1.0 / 30.0
    np.testing.assert_allclose(lin.weight.detach().numpy(), exp_w, rtol=1e-6)
    np.testing.assert_allclose(lin.bias.detach().numpy(), exp_b, rtol=1e-6)
    assert info["dampened_params"] == 4


def test_ssd_importance_is_mean_of_batch_squared_gradients():
    from cnr_fast.baselines.ssd import importances
    from cnr_fast.data import batches

    ds = _tiny_ds()
    model = CountingModel().eval()
    imp = importances(model, ds.train, 20, CPU)
    expected = [torch.zeros_like(p) for p in model.parameters()]
    nb = 0
    for x, y in batches(ds.train, 20):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        for e, g in zip(expected, grads):
            e += g.square()
        nb += 1
    for a, e in zip(imp, expected):
        torch.testing.assert_close(a, e / nb)


def test_salun_mask_is_global_top_share_and_unmasked_weights_do_not_move():
    from cnr_fast.baselines.salun import random_labelling, saliency_mask

    ds = _tiny_ds()
    model = CountingModel()
    mask = saliency_mask(model, ds.train.of_classes([1]), 0.5, 16, CPU)
    total = sum(m.numel() for m in mask)
    assert abs(sum(int(m.sum()) for m in mask) - total / 2) <= 2
    cfg = RunConfig().replace(baseline={"salun_epochs": 2, "salun_batch_size": 8})
    out, info = random_labelling(model, ds, [1], cfg, mask, 0.05, device=CPU, quiet=True)
    for p0, p1, m in zip(model.parameters(), out.parameters(), mask):
        assert torch.equal(p1.detach()[~m], p0.detach()[~m])
    assert any(not torch.equal(p1.detach()[m], p0.detach()[m]) for p0, p1, m in zip(model.parameters(),
                                                                                    out.parameters(), mask))


def test_select_on_validation_forgets_most_within_the_retain_margin():
    from cnr_fast.baselines._common import select_on_validation
    from cnr_fast.errors import UserError

    ds = _tiny_ds()

    class Const(torch.nn.Module):
        def __init__(self, cls):
            super().__init__()
            self.cls = cls

        def forward(self, x):
            out = torch.zeros(len(x), 3)
            out[:, self.cls] = 1
            return out

    # the original predicts class 1 everywhere: val retain acc 0 (classes 0, 2), forget acc 1; predicting
    # class 0 everywhere keeps retain accuracy 0.5 and forgets class 1 (forget acc 0)
    model, info = select_on_validation({"a": 1, "b": 0}, lambda c: (Const(c), {}), ds, [1], CPU, "t", quiet=True,
                                       original=Const(1))
    assert info["chosen_on_validation"] == "b" and info["validation"]["b"]["score"] == pytest.approx(0.5)
    assert model.cls == 0 and info["validation_rule"]["within_margin"]
    assert info["validation_rule"]["original_val_retain_acc"] == pytest.approx(0.0)
    ds.val = None
    with pytest.raises(UserError, match="validation split"):
        select_on_validation({"a": 1}, lambda c: (Const(c), {}), ds, [1], CPU, "t", quiet=True, original=Const(1))


def test_the_validation_rule_never_prefers_a_collapsed_model():
    """Hand-made validation tables: the old score (retain - forget) would take the collapsed candidate."""
    from cnr_fast.tuning import choose, retain_margin

    # SSD on one seed of the multiclass run: retain 0.125 / forget 0 beat retain 0.94 / forget 0.85 on the score
    table = {"alpha=2.5": {"val_forget_acc": 0.0, "val_retain_acc": 0.125},
             "alpha=5": {"val_forget_acc": 0.85, "val_retain_acc": 0.94},
             "alpha=10": {"val_forget_acc": 0.90, "val_retain_acc": 0.95}}
    assert max(table, key=lambda n: table[n]["val_retain_acc"] - table[n]["val_forget_acc"]) == "alpha=2.5"
    assert choose(table, 0.95, 0.05) == ("alpha=5", True)  # forgets most of those within the margin
    # within the margin the one that forgets most wins, even at a little retain cost; ties: more retain, earlier
    t2 = {"a": {"val_forget_acc": 0.3, "val_retain_acc": 0.95}, "b": {"val_forget_acc": 0.0, "val_retain_acc": 0.91},
          "c": {"val_forget_acc": 0.0, "val_retain_acc": 0.93}, "d": {"val_forget_acc": 0.0, "val_retain_acc": 0.93}}
    assert choose(t2, 0.95, 0.05) == ("c", True)
    # none within the margin: the one that keeps most, flagged
    t3 = {"a": {"val_forget_acc": 0.0, "val_retain_acc": 0.2}, "b": {"val_forget_acc": 0.1, "val_retain_acc": 0.6}}
    assert choose(t3, 0.95, 0.05) == ("b", False)
    # the margin: the split's resolution 1/sqrt(N), floored at 0.02
    assert retain_margin(100) == pytest.approx(0.1) and retain_margin(10 ** 6) == pytest.approx(0.02)


def test_applied_choice_runs_that_candidate_only():
    """U-LiRA's shadows: inside tuning.applied_choice a search runs the one candidate named (and still scores
    it on validation); outside, the whole grid again; a name that is not a candidate is refused."""
    from cnr_fast.tuning import applied_choice, select_on_validation

    ds = _tiny_ds()
    ran = []

    class Zero(torch.nn.Module):  # any model; the scores do not matter here
        def forward(self, x):
            return torch.zeros(len(x), 3)

    def run_one(c):
        ran.append(c)
        return Zero(), {}

    with applied_choice("b"):
        _, info = select_on_validation({"a": 1, "b": 2, "c": 3}, run_one, ds, [1], CPU, "t", quiet=True,
                                       original=Zero())
    assert ran == [2] and info["chosen_on_validation"] == "b" and list(info["validation"]) == ["b"]
    select_on_validation({"a": 1, "b": 2}, run_one, ds, [1], CPU, "t", quiet=True, original=Zero())
    assert ran == [2, 1, 2]
    with applied_choice("z"), pytest.raises(ValueError, match="not one of its candidates"):
        select_on_validation({"a": 1}, run_one, ds, [1], CPU, "t", quiet=True, original=Zero())


def test_scrub_max_step_moves_away_from_the_teacher_on_forget_data():
    from cnr_fast.baselines.scrub import distill_kl, scrub

    ds = _tiny_ds()
    model = CountingModel()
    hp = {"optim": "sgd", "lr": 0.05, "weight_decay": 0.0, "epochs": 2, "msteps": 2, "gamma": 0.0, "alpha": 0.0,
          "T": 4.0, "milestones": ()}
    cfg = RunConfig().replace(baseline={"scrub_forget_batch": 8, "scrub_retain_batch": 8})
    out, info = scrub(model, ds, [1], cfg, hp, device=CPU, quiet=True)
    x = ds.train.of_classes([1]).x.float() / 127.5 - 1
    with torch.no_grad():
        kl = float(distill_kl(out.eval()(x), model.eval()(x), 4.0))
    assert kl > 1e-4 and all(h["max_loss"] <= 0 for h in info["loss"])


def test_compare_library_call_fresh_originals_and_schema(tmp_path):
    cfg = RunConfig().replace(data={"dataset": "digits", "image_size": 8}, train={"epochs": 1},
                              baseline={"epochs": 1, "stabilize_epochs": 0})
    r = E.compare(cfg, ["ssd", "rfs", "lm"], seeds=2, device="cpu", cache=str(tmp_path), quiet=True)
    assert r["fixed_original"] is False and r["splits"]["val"] > 0
    orig = r["references"]["original"]["forget_acc"]["values"]
    assert len(orig) == 2
    assert "transfer_probe_acc.L4" not in r["methods"]["rfs"] and "transfer_probe_acc.L4" in r["methods"]["ssd"]
    assert set(r["references"]["cka_null"]["pos"]) == {"L0", "L1", "L2", "L3", "L4"}
    assert all(not E.is_coordinate_bound(k) for k in r["separation"])
    # two seeds trained two different originals (fresh per seed); --fixed-original keeps one
    files = sorted(p.name for p in (tmp_path / "models").glob("original-*.pt"))
    assert len(files) == 2
    md = E.compare_report_md(r)
    assert "| metric | original | retrained | null | ssd | rfs | lm |" in md
    # every validation choice is kept per seed with all candidates, and the report shows it
    assert [c["chosen"].startswith("alpha=") for c in r["per_seed_choices"]["ssd"]] == [True, True]
    assert set(r["per_seed_choices"]["ssd"][0]["validation"]) == {"alpha=2.5", "alpha=5", "alpha=7.5", "alpha=10"}
    assert r["per_seed_choices"]["rfs"] == [None, None]
    assert "## Settings chosen on validation" in md
    # the originals are named by their weights: two seeds, two digests, both in the report
    digests = [o["weights_sha256"] for o in r["per_seed_originals"]]
    assert len(set(digests)) == 2 and all(d[:12] in md for d in digests)
    assert r["machine"]["git_commit"] is None or len(r["machine"]["git_commit"]) == 40
    assert {"torch_threads", "cpu_model", "cpu_vector_flags", "load_avg_before", "load_avg_after",
            "git_dirty", "torch"} <= set(r["machine"])


def test_holm_adjustment_matches_an_independent_computation():
    ps = {"a": 0.01, "b": 0.04, "c": 0.03, "d": None, "e": 0.5}
    got = E.holm(ps)
    # Holm by its definition: reject H_(i) at level q iff p_(j) <= q / (m - j) for all j <= i; the adjusted
    # p of H_(i) is the smallest q that rejects it, found here by brute force over a fine grid.
    finite = sorted((p, k) for k, p in ps.items() if p is not None)
    m = len(finite)
    grid = [i / 100000 for i in range(1, 100001)]
    for i, (_, k) in enumerate(finite):
        q = next(q for q in grid if all(finite[j][0] <= q / (m - j) + 1e-12 for j in range(i + 1)))
        assert got[k] == pytest.approx(q, abs=1e-5), (k, got[k], q)
    assert got["d"] is None
    # constant paired differences give no p (never 0); identical values give 1
    s = E.summarise([0.2, 0.3, 0.4], [0.1, 0.2, 0.3])
    assert s["p_vs_cnr"] is None and E.format_p(s["p_vs_cnr"]) == "n/a"
    assert E.summarise([0.2, 0.3], [0.2, 0.3])["p_vs_cnr"] == 1.0
    assert E.format_p(1e-9) == "<1e-4" and E.format_p(0.0) != "0"


def test_separation_uses_holm_adjusted_p_over_the_metrics_judged():
    # 3 seeds, 12 metrics: "big" differs by ~0.5 with tiny noise (t large), "edge" by ~0.2 with an interval
    # that excludes 0 at 95% but a p (~0.02) that Holm over 12 metrics lifts above 0.05, the rest by ~0,
    # "const" by exactly 0.3 on every seed (no t statistic: the interval decides), "cka_neg.L4"-style keys too.
    from scipy import stats

    rng = np.random.default_rng(0)
    diffs = {"big": [0.50, 0.51, 0.49], "edge": [0.16, 0.22, 0.25], "const": [0.3, 0.3, 0.3],
             **{f"noise{i}": list(rng.normal(0, 0.05, 3)) for i in range(9)}}
    per_seed = []
    for s in range(3):
        orig = {k: 0.5 + d[s] for k, d in diffs.items()}
        ret = {k: 0.5 for k in diffs}
        per_seed.append({"original": orig, "retrained": ret, "m": {k: 0.5 + d[s] / 2 for k, d in diffs.items()}})
    table = {n: {k: {"mean": float(np.mean([ps[n][k] for ps in per_seed]))} for k in diffs}
             for n in ("original", "retrained")}
    v = E.judge(per_seed, table, ["m"], list(diffs))
    raw = {k: (stats.ttest_1samp(np.asarray(d, np.float64), 0).pvalue if k != "const" else None) for k, d in diffs.items()}
    for k in diffs:
        assert v[k]["p"] == (None if raw[k] is None else pytest.approx(raw[k], rel=1e-9)), k
    # Holm over the 11 finite p by its definition: the i-th smallest times (m - i), running max, capped at 1
    order = sorted((p, k) for k, p in raw.items() if p is not None)
    run = 0.0
    for i, (p, k) in enumerate(order):
        run = max(run, min(1.0, (len(order) - i) * p))
        assert v[k]["p_holm"] == pytest.approx(run, rel=1e-9), k
    assert v["big"]["separates"] and v["const"]["separates"]
    lo = np.mean(diffs["edge"]) - stats.t.ppf(0.975, 2) * np.std(diffs["edge"], ddof=1) / np.sqrt(3)
    assert lo > 0 and raw["edge"] < 0.05 and v["edge"]["p_holm"] >= 0.05  # the interval alone would say yes
    assert not v["edge"]["separates"]
    assert not any(v[f"noise{i}"]["separates"] for i in range(9))
    assert v["big"]["distance_to_retrained"]["m"] == pytest.approx(np.mean(np.abs(diffs["big"])) / 2)
    assert "distance_to_retrained" in v["noise0"]  # computed everywhere, meaningful only where it separates

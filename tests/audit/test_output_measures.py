"""Output measures (cnr_fast/audit/outputs.py): ZRF, activation distance, JS divergence to the retrained model.

Each is checked against an independent float64 computation written here from its definition (scipy's
Jensen-Shannon distance, numpy norms, the bad-teaching code's torch expression), then end to end in
audit_models: the values every audited model gets equal the same definitions applied to the models'
outputs computed here one example at a time, and they reach the definitions, the chance levels and the
verdict. Tolerances: 1e-12 on float64 inputs; 1e-5 end to end (float32 logits batched differently).
"""

import copy

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from cnr_fast.audit import outputs as O


def _probs(rng, n, c, zeros=False):
    z = rng.normal(0, 3, (n, c))
    if zeros:  # a LogitMask-like column: probability exactly 0
        z[:, 0] = -np.inf
    return softmax(z, axis=1)


def _js_scipy(p, q):
    # scipy's jensenshannon is the square root of the JS divergence (natural log by default)
    return np.array([jensenshannon(a, b) ** 2 for a, b in zip(p, q)])


@pytest.mark.parametrize("zeros", [False, True])
def test_js_zrf_and_activation_distance_match_scipy_numpy(zeros):
    rng = np.random.default_rng(0)
    p, q = _probs(rng, 200, 10, zeros), _probs(rng, 200, 10)
    js = _js_scipy(p, q)
    np.testing.assert_allclose(O.js_divergence(p, q), js, rtol=1e-10, atol=1e-13)
    assert O.zrf(p, q) == pytest.approx(1 - js.mean(), abs=1e-12)
    assert O.activation_distance(p, q) == pytest.approx(np.linalg.norm(p - q, axis=1).mean(), abs=1e-12)
    # bounds and references: identical outputs 0 / ZRF 1; disjoint one-hots reach log 2 and sqrt 2
    assert np.allclose(O.js_divergence(p, p), 0, atol=1e-15) and O.zrf(q, q) == pytest.approx(1.0)
    a, b = np.eye(4)[[0, 1]], np.eye(4)[[2, 3]]
    assert np.allclose(O.js_divergence(a, b), np.log(2)) and O.zrf(a, b) == pytest.approx(1 - np.log(2))
    assert O.activation_distance(a, b) == pytest.approx(np.sqrt(2))


def test_probabilities_match_scipy_softmax_and_reject_nan():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 50, (30, 7))
    z[:5, 3] = -np.inf
    np.testing.assert_allclose(O.probabilities(torch.tensor(z, dtype=torch.float32)),
                               softmax(z.astype(np.float32).astype(np.float64), axis=1), rtol=1e-12, atol=1e-300)
    assert (O.probabilities(torch.tensor(z))[:5, 3] == 0).all()
    with pytest.raises(ValueError):
        O.probabilities(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError):
        O.js_divergence(np.ones((2, 3)) / 3, np.ones((3, 3)) / 3)


def test_bad_teaching_jsdiv_is_the_official_code():
    """metrics.py JSDiv of vikram2000b/bad-teaching-unlearning, in torch float64 as written there: the KLs the
    other way round and F.kl_div's default "mean" over examples x classes; not the JS of the paper."""
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    p, q = _probs(rng, 50, 20), _probs(rng, 50, 20)
    pt, qt = torch.tensor(p), torch.tensor(q)
    m = (pt + qt) / 2
    with pytest.warns(UserWarning):  # the warning the notebook printed
        ref = float(0.5 * F.kl_div(torch.log(pt), m) + 0.5 * F.kl_div(torch.log(qt), m))
    assert O.bad_teaching_jsdiv(p, q) == pytest.approx(ref, rel=1e-12)
    assert O.bad_teaching_jsdiv(p, q) != pytest.approx(_js_scipy(p, q).mean(), rel=1e-2)
    assert O.bad_teaching_jsdiv(np.eye(3)[[0]], np.eye(3)[[1]]) == np.inf  # unbounded where the paper's is log 2


# ----------------------------------------------------------------------------------------- in the audit


def _ds():
    from cnr_fast.data import Dataset, Split

    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 10
        x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        x[:, :, :4, :4] = (y * 25).to(torch.uint8).view(-1, 1, 1, 1)
        return Split(x, y)

    return Dataset("synthetic", split(200), split(100), 10, [str(i) for i in range(10)])


def _outputs_one_by_one(model, ds, forget):
    """Softmax outputs (float64) on the forget-class test examples, one example per forward pass."""
    rows = [i for i, y in enumerate(ds.test.y.tolist()) if y in forget]
    with torch.no_grad():
        z = np.stack([model(ds.test.x[i:i + 1].float() / 127.5 - 1).double().numpy()[0] for i in rows])
    return softmax(z, axis=1)


@pytest.fixture(scope="module")
def audited():
    pytest.importorskip("sklearn")
    from cnr_fast.audit import audit_models
    from cnr_fast.models import LogitMask, build_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        mk = lambda: build_model("resnet18", 10, 1, 28, 0.0625).eval()
        original, retrained, null = mk(), mk(), mk()
        unlearned = copy.deepcopy(original)
        with torch.no_grad():
            unlearned.fc.bias[2] -= 5.0
        models = {"original": original, "unlearned": unlearned, "masked": LogitMask(original, [2]),
                  "retrained": retrained}
        ds = _ds()
        kw = {"taps": ["L4"], "shots": (1,), "relearn": False, "figures": False, "quiet": True, "seed": 3}
        with_ref = audit_models(models, ds, [2], device="cpu", retrained="retrained", null_model=null, **kw)
        no_ref = audit_models({"original": original, "unlearned": unlearned}, ds, [2], device="cpu", **kw)
    finally:
        torch.set_num_threads(before)
    return ds, {**models, "retrained_null": null}, with_ref, no_ref


def test_audit_values_equal_the_definitions_on_the_models_outputs(audited):
    ds, models, r, no_ref = audited
    p = {n: _outputs_one_by_one(m, ds, [2]) for n, m in models.items()}
    # the incompetent model, from its definition: the original re-initialised module by module, seeded (seed=3)
    torch.manual_seed(3)
    inc = copy.deepcopy(models["original"])
    for mod in inc.modules():
        if mod is not inc and hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    p_inc = _outputs_one_by_one(inc.eval(), ds, [2])
    for name, m in r["metrics"].items():
        assert m["zrf"] == pytest.approx(1 - _js_scipy(p[name], p_inc).mean(), abs=1e-5), name
        if name == "retrained":
            assert m["activation_distance"] == 0.0 and m["js_to_retrained"] == 0.0  # itself, by definition
            continue
        assert m["activation_distance"] == pytest.approx(np.linalg.norm(p[name] - p["retrained"], axis=1).mean(),
                                                         abs=1e-5), name
        assert m["js_to_retrained"] == pytest.approx(_js_scipy(p[name], p["retrained"]).mean(), abs=1e-5), name
    # the forget logit pushed down moves the outputs: the unlearned model is not the original on these measures
    assert r["metrics"]["unlearned"]["js_to_retrained"] != pytest.approx(r["metrics"]["original"]["js_to_retrained"],
                                                                         abs=1e-3)
    # a masked forget logit is a probability of 0, not a NaN
    assert np.isfinite(r["metrics"]["masked"]["js_to_retrained"]) and np.isfinite(r["metrics"]["masked"]["zrf"])
    # no retrained reference: the distances to it are None, ZRF is still computed (it needs none)
    for m in no_ref["metrics"].values():
        assert m["activation_distance"] is None and m["js_to_retrained"] is None
    assert no_ref["metrics"]["unlearned"]["zrf"] == pytest.approx(r["metrics"]["unlearned"]["zrf"], abs=1e-12)


def test_measures_reach_definitions_chance_verdict_and_report(audited, tmp_path):
    from cnr_fast.audit import write_report
    from cnr_fast.audit.report import fmt

    _, _, r, _ = audited
    for key in ("zrf", "activation_distance", "js_to_retrained"):
        assert key in r["definitions"]
        e = r["verdict"]["measures"][key]  # judged: placed between the original and the retrained model
        assert {"original", "retrained", "null", "margin"} <= set(e) and "unlearned" in e["models"]
    assert r["verdict"]["measures"]["activation_distance"]["retrained"] == 0.0
    assert r["references"]["chance"]["zrf"] == 1.0
    write_report(tmp_path, r)
    md = (tmp_path / "report.md").read_text()
    for key in ("zrf", "activation_distance", "js_to_retrained"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {key} |"))
        assert fmt(r["metrics"]["unlearned"][key]) in row

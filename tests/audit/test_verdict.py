"""The verdict rule (audit/verdict.py) on hand-made metrics, checked against the rule written out here."""

import math

import pytest

from cnr_fast.audit.verdict import flatten, verdict, zone


def _m(forget_acc, cka_l3, cka_l4, mia, retain=0.97):
    return {"forget_acc": forget_acc, "retain_acc": retain, "cka_neg": {"L3": cka_l3, "L4": cka_l4},
            "cka_pos": {"L3": 0.9, "L4": 0.9}, "mia_acc": mia, "transfer_probe_acc": {"L4": 0.9}}


METRICS = {
    "original": _m(0.96, 1.0, 1.0, 0.52),
    "retrained": _m(0.0, 0.60, 0.45, 0.50),
    "retrained_null": _m(0.0, 0.55, 0.50, 0.51),
    # forget acc like retrained; CKA L3 like the original; CKA L4 halfway; MIA not separating anyway
    "a": _m(0.01, 0.98, 0.72, 0.70),
    # past the retrained model on CKA L4 (less like the original than an unrelated model)
    "b": _m(0.50, 0.62, 0.10, 0.5),
}


def _expected(key, n_forget=100):
    f = {n: flatten(m) for n, m in METRICS.items()}
    o, r, n = f["original"][key], f["retrained"][key], f["retrained_null"][key]
    margin = max(abs(r - n), 1 / math.sqrt(n_forget))
    return o, r, margin, abs(o - r) > 2 * margin


def test_rule_per_measure():
    v = verdict(METRICS, original="original", retrained="retrained", null="retrained_null", audited=["a", "b"],
                n_forget=100)
    # judged: forget-class measures only (no retain_acc, cka_pos), never coordinate-bound ones
    assert set(v["measures"]) == {"forget_acc", "cka_neg.L3", "cka_neg.L4", "mia_acc"}
    assert v["separating"] == ["forget_acc", "cka_neg.L3", "cka_neg.L4"]  # MIA: |0.52-0.50| <= 2*0.1
    for key, e in v["measures"].items():
        o, r, margin, sep = _expected(key)
        assert e["margin"] == pytest.approx(margin) and e["separates"] == sep
        for name in ("a", "b"):
            a = flatten(METRICS[name])[key]
            assert e["models"][name]["position"] == pytest.approx((a - r) / (o - r))
    z = {k: {n: e["models"][n]["zone"] for n in ("a", "b")} for k, e in v["measures"].items()}
    assert z["forget_acc"] == {"a": "with_retrained", "b": "between"}
    assert z["cka_neg.L3"] == {"a": "with_original", "b": "with_retrained"}
    assert z["cka_neg.L4"] == {"a": "between", "b": "beyond_retrained"}
    assert z["mia_acc"] == {"a": None, "b": None}  # not separating: no place given
    a = v["models"]["a"]
    assert a["counts"]["with_retrained"] == 1 and a["counts"]["with_original"] == 1 and a["counts"]["between"] == 1
    assert a["sentence"].startswith("a: with the retrained model on 1 of 3 separating measures, with the original "
                                    "on 1, between them on 1")
    assert "past the retrained model on 1" in v["models"]["b"]["sentence"]


def test_resolution_floor_and_no_separating_measure():
    # with 4 forget examples the resolution is 0.5: nothing separates, and the sentence says so
    v = verdict(METRICS, original="original", retrained="retrained", null="retrained_null", audited=["a"],
                n_forget=4)
    assert v["resolution"] == 0.5 and v["separating"] == []
    assert "no measure separates" in v["models"]["a"]["sentence"]
    with pytest.raises(ValueError):
        verdict(METRICS, original="original", retrained="retrained", null="retrained_null", audited=["a"],
                n_forget=0)


def test_zone_boundaries():
    assert zone(0.1, o=1.0, r=0.0, margin=0.1) == "with_retrained"
    assert zone(0.9, o=1.0, r=0.0, margin=0.1) == "with_original"
    assert zone(0.5, o=1.0, r=0.0, margin=0.1) == "between"
    assert zone(-0.2, o=1.0, r=0.0, margin=0.1) == "beyond_retrained"
    assert zone(1.2, o=1.0, r=0.0, margin=0.1) == "beyond_original"
    assert zone(0.5, o=0.0, r=1.0, margin=0.1) == "between"  # a metric that falls as the class goes


def test_python_api_gives_the_verdict_with_a_null():
    """cnr_fast.audit_model(..., retrained=, null=): the null is audited and the verdict placed; null without
    retrained is refused."""
    import torch

    import cnr_fast
    from cnr_fast.models import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (120, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(120) % 10
    data = {"train": (x[:80], y[:80]), "test": (x[80:], y[80:])}
    torch.manual_seed(0)
    m = [build_model("resnet18", 10, 1, 8, 0.0625).eval() for _ in range(3)]
    # untrained on purpose: force=True lets the input checks (accuracy near chance) pass them
    r = cnr_fast.audit_model(m[0], original=m[0], retrained=m[1], null=m[2], data=data, forget=[2], relearn=False,
                             shots=(1,), force=True)
    assert "retrained_null" in r["metrics"] and set(r["verdict"]["models"]) == {"unlearned"}
    with pytest.raises(ValueError, match="null needs retrained"):
        cnr_fast.audit_model(m[0], original=m[0], null=m[2], data=data, forget=[2], force=True)


def test_a_damaged_model_is_named_damaged_first_and_never_with_the_retrained_model():
    """Hand-made values: "c" forgets like the retrained model on every measure but keeps retain accuracy 0.27."""
    metrics = {**METRICS, "c": _m(0.0, 0.58, 0.47, 0.50, retain=0.27), "d": _m(0.0, 0.58, 0.47, 0.50, retain=0.95)}
    v = verdict(metrics, original="original", retrained="retrained", null="retrained_null", audited=["c", "d"],
                n_forget=100, n_retain=900)
    c, d = v["models"]["c"], v["models"]["d"]
    # margin = max(|r - n| = 0, 1/sqrt(900) = 0.033, floor 0.02); 0.27 < min(0.97, 0.97) - 0.033
    assert c["utility"]["margin"] == pytest.approx(1 / 30) and c["damaged"]
    assert c["counts"]["with_retrained"] == 3  # its forget measures, kept for reading
    assert c["sentence"].startswith("c: damaged: retain accuracy 0.270") and "with the retrained model on" not in c["sentence"]
    # 0.95 is within 0.033 of 0.97: not damaged, placed as usual
    assert not d["damaged"] and d["sentence"].startswith("d: with the retrained model on 3 of 3")


def test_over_seeds_a_damaged_seed_is_counted_apart():
    from cnr_fast.experiments.stats import verdict_over_seeds

    def seed(retain_c):
        return {n: flatten(m) for n, m in {**METRICS, "c": _m(0.0, 0.58, 0.47, 0.50, retain=retain_c)}.items()}

    v = verdict_over_seeds([seed(0.27), seed(0.96), seed(0.96)], ["c"], n_forget=100, n_retain=900)
    m = v["methods"]["c"]
    assert m["damaged_seeds"] == 1 and m["seeds"] == 3
    assert m["shares"]["with_retrained"]["values"] == [1.0, 1.0]  # the two undamaged seeds only
    assert m["sentence"].startswith("c: damaged on 1 of 3 seeds") and "on the other 2: with the retrained" in m["sentence"]


def test_bounded_interval_stays_in_the_unit_interval():
    from cnr_fast.experiments.stats import bounded_interval, t_interval

    vals = [0.0, 1.0, 1.0]
    assert t_interval(vals)[1] < 0 < 1 < t_interval(vals)[2] + 1  # the t interval leaves [0, 1]
    mean, lo, hi = bounded_interval(vals)
    assert 0.0 <= lo <= mean <= hi <= 1.0 and mean == pytest.approx(2 / 3)
    assert math.isnan(bounded_interval([0.2, 0.4])[1])  # below 3 seeds: no interval

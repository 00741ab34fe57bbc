

def test_intervals_of_unit_range_measures_stay_in_0_1_and_others_are_the_t_interval():
    """Issue 28: at 2-3 seeds the t-interval of an accuracy runs past 0 and 1. summarise_runs intersects the
    interval of a [0, 1] measure with [0, 1] and leaves every other measure's t-interval alone (both checked
    against scipy's t quantile)."""
    import numpy as np
    from scipy import stats as st

    from cnr_fast.experiments.stats import in_unit_range, summarise_runs, within_unit

    per_seed = [{"m": {"forget_acc": 0.0, "cka_neg.L4": 0.99, "selectivity.L4": -0.2, "klom_forget": 3.0}},
                {"m": {"forget_acc": 0.03, "cka_neg.L4": 0.93, "selectivity.L4": 0.4, "klom_forget": 9.0}}]
    t = summarise_runs(per_seed, ["m"], None)["m"]

    def t95(v):
        v = np.asarray(v, dtype=np.float64)
        h = st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        return v.mean() - h, v.mean() + h

    lo, hi = t95([0.0, 0.03])
    assert lo < 0 and t["forget_acc"]["ci_low"] == 0.0 and abs(t["forget_acc"]["ci_high"] - hi) < 1e-12
    lo, hi = t95([0.99, 0.93])
    assert hi > 1 and t["cka_neg.L4"]["ci_high"] == 1.0 and abs(t["cka_neg.L4"]["ci_low"] - lo) < 1e-12
    for k, v in (("selectivity.L4", [-0.2, 0.4]), ("klom_forget", [3.0, 9.0])):
        lo, hi = t95(v)
        assert abs(t[k]["ci_low"] - lo) < 1e-12 and abs(t[k]["ci_high"] - hi) < 1e-12 and "interval" not in t[k]
    assert t["forget_acc"]["interval"] == "t, within [0, 1]"
    # the names the README's paths use
    assert in_unit_range("methods/cnr/forget_acc") and in_unit_range("cka_null") and in_unit_range("ulira_auc")
    assert not in_unit_range("activation_distance") and not in_unit_range("selectivity_delta.L4")
    assert within_unit({"mean": 0.5, "ci_low": -3.0, "ci_high": 4.0}, "klom_forget")["ci_low"] == -3.0

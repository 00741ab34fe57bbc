"""The registered analysis of the ten-seed comparison (bench/prereg10.py, bench/preregistration.md) on hand-made
per-seed values: the registered contrasts only, the excess measures, and the tests against scipy and Holm by hand."""

import importlib.util
import os

import numpy as np
import pytest
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def prereg():
    spec = importlib.util.spec_from_file_location("prereg10", os.path.join(ROOT, "bench", "prereg10.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(prereg, seeds=4):
    rng = np.random.default_rng(0)
    per_seed = []
    for s in range(seeds):
        ps = {"original": {"forget_acc": 0.99}, "retrained": {"forget_acc": 0.0}}
        for i, m in enumerate(("cnr", "ssd", "lm")):
            ps[m] = {"forget_acc": 0.1 * i + 0.01 * rng.standard_normal()}
            if s < 3:  # U-LiRA on the first seeds only
                ps[m].update(ulira_auc=0.9 - 0.1 * i + 0.02 * s, ulira_null_auc=0.5 + 0.01 * s)
        per_seed.append(ps)
    return {"seeds": list(range(seeds)), "per_seed": per_seed,
            "per_seed_times": {"cnr": [1] * seeds, "ssd": [1] * seeds, "lm": [1] * seeds}}


def test_registered_contrasts_and_tests_against_scipy(prereg):
    res = _result(prereg)
    out = prereg.analyse(res)
    assert out["methods"] == ["cnr", "ssd", "lm"]
    fa = out["measures"]["forget_acc"]
    pairs = [(r["a"], r["b"]) for r in fa["rows"]]
    assert pairs == [("cnr", "retrained"), ("ssd", "retrained"), ("lm", "retrained"), ("cnr", "ssd"), ("cnr", "lm")]
    assert fa["family_size"] == 5 and fa["seeds"] == [0, 1, 2, 3]
    ps_ = res["per_seed"]
    for r in fa["rows"]:
        d = np.array([ps[r["a"]]["forget_acc"] - ps[r["b"]]["forget_acc"] for ps in ps_])
        assert r["p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-12)
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        assert r["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-12)
    ps = sorted(r["p"] for r in fa["rows"])  # Holm by hand
    holm = np.maximum.accumulate([min(1, (5 - i) * p) for i, p in enumerate(ps)])
    assert sorted(r["p_holm"] for r in fa["rows"]) == pytest.approx(list(holm), rel=1e-12)


def test_excess_measures_use_the_null_in_the_methods_place_on_the_seeds_that_have_them(prereg):
    res = _result(prereg)
    out = prereg.analyse(res)
    ul = out["measures"]["ulira_excess"]
    assert ul["seeds"] == [0, 1, 2]
    row = next(r for r in ul["rows"] if (r["a"], r["b"]) == ("ssd", "retrained"))
    expect = np.mean([ps["ssd"]["ulira_auc"] - ps["ssd"]["ulira_null_auc"] for ps in res["per_seed"][:3]])
    assert row["difference"] == pytest.approx(expect, rel=1e-12)
    assert out["measures"]["klom_excess"]["rows"] == []  # no seed reports KLOM here
    n_all = sum(len(t["rows"]) for t in out["measures"].values())
    assert out["family_size_all"] == n_all
    for t in out["measures"].values():  # the sensitivity correction is never weaker than the per-measure one
        for r in t["rows"]:
            if r["p"] is not None:
                assert r["p_holm_all"] >= r["p_holm"] - 1e-15


def test_findings_tables_show_every_registered_contrast_as_analysed(prereg):
    """The findings tables (bench/findings_table.prereg_*) of an analysis: each cell's difference and interval
    recomputed here from the per-seed values, its reading as the analysis gave it, every contrast in the full
    table, the summary's counts; a measure no seed reports says so."""
    import sys
    sys.path.insert(0, ROOT)
    from bench import findings_table as ft

    res = _result(prereg, seeds=5)
    out = prereg.analyse(res)
    ps_ = res["per_seed"]

    def cell(a, b, key, rows):
        d = np.array([ps[a][key] - ps[b][key] for ps in rows])
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"

    vs_ret = ft.prereg_vs_retrained(out).splitlines()
    assert vs_ret[0] == "| method - retrained | forget acc | U-LiRA AUC excess |"  # KLOM: no seed has it
    assert [ln.split(" | ")[0] for ln in vs_ret[2:]] == ["| cnr", "| ssd", "| lm"]
    ssd = vs_ret[3].split(" | ")
    assert ssd[1] == cell("ssd", "retrained", "forget_acc", ps_) + " decided"
    d = np.array([ps["ssd"]["ulira_auc"] - ps["ssd"]["ulira_null_auc"] for ps in ps_[:3]])  # 3 seeds, minus 0
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert ssd[2].startswith(f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] ")
    vs_cnr = ft.prereg_vs_cnr(out).splitlines()
    assert [ln.split(" | ")[0] for ln in vs_cnr[2:]] == ["| ssd", "| lm"]
    assert vs_cnr[3].split(" | ")[1] == cell("cnr", "lm", "forget_acc", ps_) + " decided"
    readings = {(r["a"], r["b"]): r["reading"] for r in out["measures"]["forget_acc"]["rows"]}
    short = ft._reading({"reading": readings[("cnr", "retrained")], "decided_all": True})
    assert vs_ret[2].split(" | ")[1].endswith(" " + short)
    full = ft.prereg_full(out).splitlines()
    assert len(full) - 2 == out["family_size_all"]
    summary = ft.prereg_summary(out).splitlines()
    fa = out["measures"]["forget_acc"]["rows"]
    n_dec = sum(r["decided"] for r in fa)
    assert summary[2].startswith(f"| forget acc | 5 | 5 | {n_dec} | ")
    assert summary[-1].startswith("| KLOM excess | 0 | 0 |") and "no seed reports it" in summary[-1]
    # the readings, short: the dagger marks a contrast decided per measure but not under Holm over all
    assert ft._reading({"reading": "decided", "decided_all": False}) == "decided\u2020"
    assert ft._reading({"reading": "open: about 14 seeds in all"}) == "open (14 seeds)"
    assert ft._reading({"reading": "no practical difference"}) == "no practical difference"


def test_answers_table_lists_the_contrasts_holm_decides_by_hand(prereg):
    """prereg_answers: per measure, the methods decided to differ (Holm per measure < 0.05, recomputed here with
    scipy and Holm by hand), with the sign of the mean difference; every other contrast under 'not shown'."""
    import sys
    sys.path.insert(0, ROOT)
    from bench import findings_table as ft

    res = _result(prereg, seeds=5)
    res["per_seed"][0]["lm"]["forget_acc"] = 0.9  # one contrast made noisy enough to stay undecided
    out = prereg.analyse(res)
    ps_ = res["per_seed"]
    pairs = [("cnr", "retrained"), ("ssd", "retrained"), ("lm", "retrained"), ("cnr", "ssd"), ("cnr", "lm")]
    diffs = {c: np.array([ps[c[0]]["forget_acc"] - ps[c[1]]["forget_acc"] for ps in ps_]) for c in pairs}
    p = {c: stats.ttest_1samp(d, 0.0).pvalue for c, d in diffs.items()}
    order = sorted(pairs, key=p.get)
    holm = dict(zip(order, np.maximum.accumulate([min(1, (len(order) - i) * p[c]) for i, c in enumerate(order)])))
    decided = {c for c in pairs if holm[c] < 0.05}
    assert 0 < len(decided) < len(pairs)  # the fixture has both kinds
    row = next(ln for ln in ft.prereg_answers(out).splitlines() if ln.startswith("| forget acc |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]

    def names(cell):
        return set() if cell == "none" else {n.strip() for n in cell.split(",")}

    def want(vs_retrained, is_decided):
        got = set()
        for c in pairs:
            if (c[1] == "retrained") == vs_retrained and (c in decided) == is_decided:
                name = c[0] if vs_retrained else c[1]
                got.add(f"{name} ({'+' if diffs[c].mean() > 0 else '-'})" if is_decided else name)
        return got

    assert names(cells[0]) == want(True, True) and names(cells[1]) == want(True, False)
    assert names(cells[2]) == want(False, True) and names(cells[3]) == want(False, False)

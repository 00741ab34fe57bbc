"""The statistics a decision is read from (issue 28): pairwise contrasts with Holm's adjustment against scipy and a
hand-written Holm, the seeds a contrast needs against the textbook value and a simulation, and compare's report.html."""

import numpy as np
import pytest
from scipy import stats

from cnr_fast.experiments.stats import pairwise, seeds_needed


def test_seeds_needed_matches_the_textbook_and_a_simulation():
    # Cohen's paired design: dz = 0.5, two-sided alpha 0.05, power 0.8 -> 34 pairs (G*Power gives 34)
    d = [-0.5, 0.5, 1.5]  # mean 0.5, sd 1
    assert seeds_needed(d, 0.05) == 34
    # a simulation of the paired t-test at the planned n reaches the power, one seed fewer does not (quite)
    rng = np.random.default_rng(1)
    d = [0.10, 0.25, 0.15, 0.05]
    n = seeds_needed(d, 0.01)
    dz = np.mean(d) / np.std(d, ddof=1)

    def power(k):
        x = rng.normal(dz, 1.0, size=(20000, k))
        return float((stats.ttest_1samp(x, 0.0, axis=1).pvalue < 0.01).mean())

    assert power(n) >= 0.78 and power(n - 1) < 0.82
    assert seeds_needed([0.2, 0.2, 0.2], 0.05) == 2 and seeds_needed([0.1, -0.1], 0.05) is None
    assert seeds_needed([0.3], 0.05) is None


def test_pairwise_against_scipy_and_holm_by_hand():
    a, b, c = [0.10, 0.20, 0.15, 0.12], [0.50, 0.45, 0.61, 0.52], [0.11, 0.24, 0.13, 0.15]
    per_seed = [{"a": {"m": x}, "b": {"m": y}, "c": {"m": z}} for x, y, z in zip(a, b, c)]
    rows = pairwise(per_seed, ["a", "b", "c"], ["m"])["m"]
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    ps = [stats.ttest_rel(x, y).pvalue for x, y in ((a, b), (a, c), (b, c))]
    for r, p in zip(rows, ps):
        assert r["p"] == pytest.approx(p)
    order = np.argsort(ps)  # Holm: sorted p times (m - i), running maximum, capped at 1
    adj, running = [0.0] * 3, 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (3 - i) * ps[j]))
        adj[j] = running
    for r, p in zip(rows, adj):
        assert r["p_holm"] == pytest.approx(p)
    ab, ac = rows[0], rows[1]
    assert ab["decided"] and ab["seeds_needed"] is None
    assert not ac["decided"] and ac["seeds_needed"] == seeds_needed([x - y for x, y in zip(a, c)], 0.05 / 3)


def test_compare_report_html_is_the_report(tmp_path):
    from cnr_fast.experiments.reports import markdown_html

    md = "# compare: x\n\nSome `code` and **bold**.\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n- one\n- two\n"
    page = markdown_html(md, "t")
    assert "<h1>compare: x</h1>" in page and "<code>code</code>" in page and "<b>bold</b>" in page
    assert "<th>a</th>" in page and "<td>&lt;2&gt;</td>" in page and "<li>two</li>" in page


def test_the_choices_table_marks_candidates_outside_the_margin():
    from cnr_fast.experiments.reports import choices_md

    c = {"chosen": "lr=1", "validation": {"lr=1": {"val_forget_acc": 1.0, "val_retain_acc": 0.97},
                                          "lr=2": {"val_forget_acc": 0.0, "val_retain_acc": 0.5}},
         "rule": {"original_val_retain_acc": 0.98, "retain_margin": 0.05, "within_margin": True}}
    row = choices_md({"rl": [c]}, [0])[-1]
    assert "**lr=1: 1.00 / 0.97**" in row and "lr=2: 0.00 / 0.50 (out)" in row and "margin 0.050" in row
    c["rule"]["within_margin"] = False
    assert "none within it" in choices_md({"rl": [c]}, [0])[-1]


def test_power_verb_reads_a_finished_compare(tmp_path, capsys):
    import json

    from cnr_fast.cli import main

    rng = np.random.default_rng(0)
    per_seed = [{"original": {"forget_acc": 0.97}, "retrained": {"forget_acc": 0.0},
                 "a": {"forget_acc": float(rng.normal(0.3, 0.02))}, "b": {"forget_acc": float(rng.normal(0.31, 0.2))}}
                for _ in range(3)]
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"per_seed": per_seed, "per_seed_times": {"a": [1, 1, 1], "b": [1, 1, 1]}}))
    assert main(["power", str(path), "--measures", "forget_acc", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "retrained - a" in out and "a - b" in out
    rows = json.loads((tmp_path / "p.json").read_text())["tables"]["compare"]["forget_acc"]
    expected = pairwise(per_seed, ["retrained", "a", "b"], ["forget_acc"])["forget_acc"]
    assert [r["reading"] for r in rows] == [r["reading"] for r in expected]
    ab = next(r for r in rows if (r["a"], r["b"]) == ("a", "b"))
    assert ab["reading"] == "no practical difference" or int(ab["reading"].split()[2]) <= 50
    assert main(["power", str(tmp_path / "missing.json")]) == 2
    assert main(["power", str(path), "--measures", "nope"]) == 2


def test_pairwise_readings_for_a_constant_difference_one_seed_and_a_missing_value():
    per = [{"a": {"m": 1.0, "k": 0.5}, "b": {"m": 0.0, "k": 0.5}, "c": {"m": 0.2}} for _ in range(3)]
    per[0]["c"]["m"] = float("nan")
    out = pairwise(per, ["a", "b", "c"], ["m", "k"])
    ab = out["m"][0]
    assert (ab["a"], ab["b"]) == ("a", "b") and ab["decided"] and ab["reading"].startswith("decided (the same")
    assert out["k"][0]["reading"] == "no practical difference"  # no difference at all
    assert out["_skipped"]["m"] == ["a - c", "b - c"]  # c's value is missing on one seed: said
    one = pairwise(per[1:2], ["a", "b"], ["m"])["m"][0]
    assert one["reading"] == "one seed: nothing to test" and not one["decided"]

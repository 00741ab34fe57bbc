"""README.md and every docs/NAME.md are what their templates (README.in.md, docs/NAME.in.md) and the committed
result files give (scripts/readme_numbers.py), and the placeholder parser fails clearly: the placeholder, its
line and the file are named.

No training: the script is stdlib only; bench/findings_table.py reads cnr_fast's stats and the unlearn summary formatter (so torch is imported).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rn = _load()


def test_readme_is_generated_from_the_template_and_the_result_files():
    want = rn.expected(ROOT)
    have = (ROOT / "README.md").read_text()
    assert have == want, ("README.md differs from README.in.md + bench/results (edit README.in.md, then run "
                          "`python scripts/readme_numbers.py`):\n" + rn.diff(have, want)[:6000])


def test_every_docs_page_is_generated_from_its_template_and_the_result_files():
    pages = rn.pages(ROOT)
    docs = [page for _, page in pages if page.startswith("docs/")]
    assert docs, "no docs/NAME.in.md template"
    assert rn.orphans(ROOT) == [], "a docs/NAME.md without its docs/NAME.in.md is not generated"
    want = rn.expected_pages(ROOT)
    assert want["README.md"] == rn.expected(ROOT)
    for tpl, page in pages:
        have = (ROOT / page).read_text() if (ROOT / page).exists() else ""
        assert have == want[page], (f"{page} differs from {tpl} + bench/results (edit {tpl}, then run "
                                    f"`python scripts/readme_numbers.py`):\n" + rn.diff(have, want[page], page, tpl)[:6000])


def test_every_alias_names_a_committed_json_file():
    for alias, rel in rn.ALIASES.items():
        path = ROOT / rel
        assert path.is_file(), (alias, rel)
        json.loads(path.read_text())


def test_template_keeps_the_first_two_commands():
    readme = (ROOT / "README.md").read_text().splitlines()
    template = (ROOT / "README.in.md").read_text().splitlines()
    assert readme[:7] == template[:7]
    assert readme[3].startswith("./scripts/install.sh && .venv/bin/cnr-fast unlearn --out runs/default")
    assert readme[4].startswith("./scripts/install.sh && .venv/bin/python -m pytest -q -n 2 --dist loadfile")


# ------------------------------------------------------------------------------------------------
# the parser, on a small file of our own

DATA = {
    "methods": {"cnr": {"forget_acc": {"mean": 0.16, "ci_low": 0.06, "ci_high": 0.26, "values": [0.16, 0.2, 0.12]}},
                "cnr-raw": {"probe_acc.L4": {"mean": 0.97}}},
    "runs": {"2,5": {"t": [30.0, 60.0]}, "2,5,7": {"t": [90.0]}},
    "rows": [{"kernel": "a", "dtype": "fp32", "x": 2.0}, {"kernel": "a", "dtype": "bf16", "x": 5.0},
             {"kernel": "b", "dtype": "fp32", "x": 1.0}],
    "seconds": 7386.2,
    "flags": ["avx2", "fma"],
    "ps": {"cnr": {"p": None}, "ssd": {"p": 0.5}, "rl": {"p": 0.04}},
    "name": "AMD EPYC",
    "nested": {"inf": float("inf")},
    "separation": {"forget_acc": {"separates": True}, "mia_acc": {"separates": False},
                 "cka_neg.L4": {"separates": True}},
}


@pytest.fixture()
def r(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(DATA))
    (tmp_path / "t.py").write_text("CASES = [\n    (1, 2),\n    (3, 4),\n    (5, 6),\n]\n")

    def render(text):
        return rn.render(text, aliases={"d": "d.json", "gone": "missing.json"}, root=tmp_path, source="T.md",
                         tables={"methods": ("d", lambda data: " | ".join(data["methods"])),
                                 "broken": ("d", lambda data: data["methods"]["rl"])})

    return render


def test_values_formats_helpers_tables_and_counts(r):
    assert r("{{d:methods/cnr/forget_acc/mean:.2f}}") == "0.16"
    assert r("{{d:methods/cnr-raw/probe_acc.L4/mean:.3f}}") == "0.970"  # dots and dashes are part of a key
    assert r("{{d:methods/cnr/forget_acc/values/1:.2f}}") == "0.20"
    assert r("{{d:methods/cnr/forget_acc/values/-1:.2f}}") == "0.12"
    assert r("{{d:methods/cnr/forget_acc/values:.2f}}") == "0.16 / 0.20 / 0.12"
    assert r("{{d:name}} and {{ d:seconds:.0f }}") == "AMD EPYC and 7386"
    assert r("{{ci:d:methods/cnr/forget_acc}}") == "0.16 [0.06, 0.26]"
    assert r("{{range:d:runs/*/t:.0f}}") == "30-90"  # '*' over a dict, lists flattened
    assert r("{{range:d:runs/2,5,7/t:.0f}}") == "90"
    assert r("{{range:d:rows/[kernel=a]/*/x:d:rows/[kernel=b]/*/x:.1f}}") == "1.0-5.0"  # several references
    assert r("{{d:rows/[kernel=a]/[dtype=bf16]/0/x:.1f}}") == "5.0"
    assert r("{{max:d:rows/[dtype~^fp]/*/x:.1f}}") == "2.0"
    assert r("{{min:d:rows/*/x:.1f}} {{maxabs:d:rows/*/x:.0f}}") == "1.0 5"
    assert r("{{ratio:d:runs/2,5/t/1:d:runs/2,5/t/0:.1f}}x") == "2.0x"
    assert r("{{hmin:d:seconds}} / {{minutes:d:seconds}} min") == "2 h 03 min / 123 min"
    assert r("{{join:d:flags}}") == "avx2, fma"
    assert r("{{min:d:ps/*/p:.2f}}") == "0.04"  # nulls inside a list are skipped
    assert r("{{separating:d:separation}}") == "`forget_acc`, `cka_neg.L4`"
    assert r("{{nonseparating:d:separation}}") == "`mia_acc`"
    assert r("{{count_keys:d:separation}} {{count_keys:d:flags}}") == "3 2"
    assert r("{{table:methods}}") == "cnr | cnr-raw"
    assert r("{{count:t.py:CASES}} cases") == "3 cases"
    assert r('plain {"json": {"a": 1}} text}}') == 'plain {"json": {"a": 1}} text}}'  # single braces, '}}' alone


def _err(r, text):
    with pytest.raises(rn.PlaceholderError) as e:
        r(text)
    return str(e.value)


def test_unknown_alias_names_the_placeholder_and_the_aliases(r):
    msg = _err(r, "line one\nsee {{cmp:methods/cnr/forget_acc/mean:.2f}}")
    assert "T.md:2:" in msg and "{{cmp:methods/cnr/forget_acc/mean:.2f}}" in msg
    assert "unknown alias 'cmp'" in msg and "d, gone" in msg


def test_missing_key_names_the_placeholder_the_file_and_the_keys_there(r):
    msg = _err(r, "{{d:methods/rl/forget_acc/mean:.2f}}")
    assert "T.md:1: {{d:methods/rl/forget_acc/mean:.2f}}" in msg
    assert "key 'rl' not found at methods of d.json" in msg and "cnr, cnr-raw" in msg  # a renamed method


def test_bad_paths_are_named(r):
    assert "must be an integer index" in _err(r, "{{d:methods/cnr/forget_acc/values/x}}")
    assert "index 3 out of range" in _err(r, "{{d:methods/cnr/forget_acc/values/3}}")
    assert "empty key" in _err(r, "{{d:methods//cnr}}")
    assert "has no key 'more'" in _err(r, "{{d:seconds/more}}")
    assert "the path must reach a value" in _err(r, "{{d:methods/cnr}}")
    assert "no item of rows in d.json matches [kernel=zz]" in _err(r, "{{d:rows/[kernel=zz]/0/x}}")
    assert "bad filter" in _err(r, "{{d:rows/[kernel]/0/x}}")
    assert "the value is inf" in _err(r, "{{d:nested/inf:.2f}}")


def test_missing_file_helper_table_and_format_errors_are_named(r):
    assert "missing.json (alias 'gone') does not exist" in _err(r, "{{gone:a}}")
    assert "{{ci:d:methods/cnr/forget_acc/values}}" in _err(r, "{{ci:d:methods/cnr/forget_acc/values}}")
    assert "helper 'ratio' takes 2 ALIAS:PATH" in _err(r, "{{ratio:d:seconds:.1f}}")
    assert "unknown table 'nope'" in _err(r, "{{table:nope}}")
    assert "table 'broken' from d.json: key 'rl' missing" in _err(r, "{{table:broken}}")
    assert "not a number" in _err(r, "{{range:d:flags}}")
    assert "not a number" in _err(r, "{{min:d:ps/cnr/p}}")  # a null alone is still an error
    assert "needs a compare.json `separation` dict" in _err(r, "{{separating:d:methods}}")
    assert "{{d:name:.2f}}" in _err(r, "{{d:name:.2f}}")  # a format that does not fit the value
    assert "no list literal NOPE" in _err(r, "{{count:t.py:NOPE}}")
    assert "write {{ALIAS:PATH}}" in _err(r, "{{d}}")


def test_unclosed_braces_are_refused(r):
    assert "T.md:2: an unclosed '{{'" in _err(r, "ok\n{{d:name\n}}")
    assert "an unclosed '{{'" in _err(r, "{{d:name}} and {{ then nothing")


def test_check_exits_1_with_a_diff_and_write_is_atomic(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.json").write_text(json.dumps(DATA))
    (tmp_path / "README.in.md").write_text("# x\n\n{{d:name}}\n")
    (tmp_path / "README.md").write_text("# x\n\nIntel\n")
    monkeypatch.setattr(rn, "ROOT", tmp_path)
    monkeypatch.setattr(rn, "ALIASES", {"d": "d.json"})
    assert rn.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "-Intel" in out and "+AMD EPYC" in out
    assert rn.main([]) == 0
    assert (tmp_path / "README.md").read_text() == "# x\n\nAMD EPYC\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.in.md", "README.md", "d.json"]  # no temp left
    assert rn.main(["--check"]) == 0
    (tmp_path / "README.in.md").write_text("{{d:nope}}\n")
    assert rn.main(["--check"]) == 2
    assert "README.in.md:1: {{d:nope}}: key 'nope' not found" in capsys.readouterr().err


def test_keys_others_sum_and_lacking(r, tmp_path):
    assert r("{{keys:d:separation}}") == "`forget_acc`, `mia_acc`, `cka_neg.L4`"
    assert r("{{keys:d:flags}}") == "`avx2`, `fma`"
    assert r("{{others:d:separation}}") == "2"
    assert r("{{sum:d:runs/*/t:.0f}} {{sum:d:rows/*/x:.1f}}") == "180 8.0"
    assert r("{{lacking:git_dirty}}") == "none"  # no bench/results/ under this root
    res = tmp_path / "bench" / "results"
    (res / "runs" / "a").mkdir(parents=True)
    (res / "x.json").write_text(json.dumps({"machine": {"git_sha": "abc", "git_dirty": False}}))
    (res / "runs" / "a" / "results.json").write_text(json.dumps({"provenance": {"git_commit": None}}))
    (res / "runs" / "a" / "config.json").write_text("{}")  # a run's config: not a result file
    assert r("{{lacking:git_dirty}}") == "`runs/a/results.json`"
    assert r("{{lacking:git_commit,git_sha}}") == "`runs/a/results.json`"  # a null value does not count
    assert r("{{lacking:git_commit,git_sha,git_dirty}}") == "`runs/a/results.json`"
    assert r("{{lacking:cpu_model}}") == "`runs/a/results.json`, `x.json`"
    assert "write {{lacking:KEY[,KEY...]}}" in _err(r, "{{lacking:}}")


def test_check_covers_docs_and_refuses_a_page_without_a_template(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.json").write_text(json.dumps(DATA))
    (tmp_path / "README.in.md").write_text("# x\n")
    (tmp_path / "README.md").write_text("# x\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.in.md").write_text("{{d:name}} [up](../README.md)\n")
    (docs / "a.md").write_text("Intel [up](../README.md)\n")
    monkeypatch.setattr(rn, "ROOT", tmp_path)
    monkeypatch.setattr(rn, "ALIASES", {"d": "d.json"})
    assert rn.pages() == [("README.in.md", "README.md"), ("docs/a.in.md", "docs/a.md")]
    assert rn.main(["--check"]) == 1
    io = capsys.readouterr()
    assert "docs/a.md (committed)" in io.out and "-Intel" in io.out and "+AMD EPYC" in io.out
    assert "docs/a.md" in io.err and "docs/a.in.md" in io.err
    assert rn.main([]) == 0
    assert (docs / "a.md").read_text() == "AMD EPYC [up](../README.md)\n"
    assert rn.main(["--check"]) == 0
    (docs / "b.md").write_text("written by hand\n")
    assert rn.main(["--check"]) == 1
    assert "docs/b.md has no template docs/b.in.md" in capsys.readouterr().err
    (docs / "b.md").unlink()
    (docs / "a.in.md").write_text("ok\n{{d:nope}}\n")
    assert rn.main(["--check"]) == 2
    assert "docs/a.in.md:2: {{d:nope}}: key 'nope' not found" in capsys.readouterr().err


def test_default_run_printout_is_what_the_cli_prints(capsys):
    """The README's default-run block: bench/findings_table.run_printout formats a results.json as
    `cnr-fast unlearn` prints it at its end (cli/unlearn.py's _print_table): on the committed default run and on
    a hand-made result with a missing value."""
    from bench.findings_table import run_printout
    from cnr_fast.cli.unlearn import _print_table

    hand = {"method": "cnr", "dataset": "mnist5k", "arch": "resnet18", "width": 0.125, "forget_classes": [2],
            "seed": 0, "precision": "fp32", "audit": {"settings": {"deepest_tap": "L4"}},
            "metrics": {"original": {"forget_acc": 0.98, "retain_acc": 0.5, "probe_acc": {"L4": 1.0}, "mia_acc": 0.56,
                                     "nn_purity": 0.9},
                        "unlearned": {"forget_acc": 0.0, "retain_acc": None, "probe_acc": {}, "mia_acc": 0.5,
                                      "nn_purity": 0.9}},
            "verdict": {"models": {"unlearned": {"sentence": "unlearned: with the retrained model on 1 of 1"}}},
            "timings_s": {"detect": 1.25, "total": 742.47}}
    committed = json.loads((ROOT / "bench/results/runs/default_mnist5k/results.json").read_text())
    for r in (hand, committed):
        capsys.readouterr()
        _print_table(r, Path("runs/default"), quiet=False)
        printed = capsys.readouterr().out.strip("\n").splitlines()
        assert run_printout(r).splitlines() == ["```", *printed, "```"]
    assert "  unlearned      0.0000          -          -     0.5000     0.9000" in run_printout(hand).splitlines()


def test_attacks_table_cells_come_from_the_file():
    """The attacks table: references and methods as 'mean [interval]' (within [0, 1]: the original's U-LiRA
    0.97 +- 0.1 shows as [0.87, 1.00]), the null as its mean over seeds, the separation column from
    `separation`, U-LiRA rows from the methods' and the original's ulira_auc."""
    from bench.findings_table import attacks_table

    summ = lambda m: {"mean": m, "ci_low": m - 0.1, "ci_high": m + 0.1}  # noqa: E731
    r = {"methods": {"cnr": {"mlp_probe_acc.L4": summ(0.3), "ulira_auc": summ(0.61), "ulira_null_auc": summ(0.52)}},
         "references": {"original": {"mlp_probe_acc.L4": summ(0.9), "ulira_auc": summ(0.97)},
                        "retrained": {"mlp_probe_acc.L4": summ(0.2)}},
         "per_seed": [{"retrained_null": {"mlp_probe_acc.L4": 0.25}}, {"retrained_null": {"mlp_probe_acc.L4": 0.35}}],
         "separation": {"mlp_probe_acc.L4": {"separates": True, "p_holm": 0.004},
                        "retain_acc": {"separates": False, "p_holm": 1.0}},
         "per_seed_ulira": {"cnr": [{"pairs": 8, "audited": {"tpr_at_1pct_fpr": 0.2}, "null": {"tpr_at_1pct_fpr": 0.0},
                                     "original": {"tpr_at_1pct_fpr": 0.9}},
                                    {"pairs": 8, "audited": {"tpr_at_1pct_fpr": 0.4}, "null": {"tpr_at_1pct_fpr": 0.02},
                                     "original": {"tpr_at_1pct_fpr": 1.0}}]},
         "verdict": {"per_seed": [{"measures": {"mlp_probe_acc.L4": {"separates": True}}},
                                  {"measures": {"mlp_probe_acc.L4": {"separates": False}}}]}}
    lines = attacks_table(r).splitlines()
    assert lines[0] == "| measure | original | retrained | null | cnr | separates (Holm p) | separates per seed |"
    assert lines[2] == "| mlp_probe_acc.L4 | 0.90 [0.80, 1.00] | 0.20 [0.10, 0.30] | 0.30 | 0.30 [0.20, 0.40] | yes (0.004) | 1/2 |"
    assert not any(line.startswith("| retain_acc") for line in lines)  # not an attack
    assert lines[3].startswith("| U-LiRA AUC (8 shadow pairs) | 0.97 [0.87, 1.00] (reach) |") and "| 0.61 [0.51, 0.71] |" in lines[3]
    assert "| 0.52 [0.42, 0.62] |" in lines[4]
    assert lines[5] == "| U-LiRA TPR at 1% FPR (mean over seeds) | 0.95 (reach) | 0.01 by definition | - | 0.30 | - | - |"
    assert lines[6] == "| U-LiRA TPR at 1% FPR, the null in the method's place | - | - | - | 0.01 | - | - |"


def test_verdict_table_cells_come_from_the_file():
    """The verdict table: one row per method, each zone's share as 'mean [low, high]' in the zones' order."""
    from bench.findings_table import VERDICT_ZONES, verdict_table

    shares = {z: {"mean": i / 10, "ci_low": i / 10 - 0.05, "ci_high": i / 10 + 0.05}
              for i, (z, _) in enumerate(VERDICT_ZONES)}
    r = {"verdict": {"methods": {"cnr": {"shares": shares, "damaged_seeds": 1, "seeds": 3},
                                 "ssd": {"shares": {"with_retrained": {"mean": 1.0}}}}}}
    lines = verdict_table(r).splitlines()
    assert lines[0] == ("| method | damaged seeds | with the retrained | between | with the original | past the retrained "
                        "| past the original |")
    assert lines[2] == ("| cnr | 1 of 3 | 0.00 [-0.05, 0.05] | 0.10 [0.05, 0.15] | 0.20 [0.15, 0.25] | 0.30 [0.25, 0.35] "
                        "| 0.40 [0.35, 0.45] |")
    assert lines[3] == "| ssd | - | 1.00 | - | - | - | - |"  # a file from before damaged seeds were counted


def test_committed_runs_said_to_share_originals_do():
    """The README says the committed comparison, attacks comparison, ablation, multiclass and continual runs share
    their three originals."""
    runs = ROOT / "bench" / "results" / "runs"

    def digests(rel, *inner):
        d = json.loads((runs / rel).read_text())
        for k in inner:
            d = d[k]
        return [(r["seed"], r["weights_sha256"], r["torch_threads"]) for r in d["per_seed_originals"]]

    cmp = digests("compare_mnist5k/compare.json")
    assert len(cmp) == 3 and len({h for _, h, _ in cmp}) == 3
    assert digests("continual_mnist5k/continual.json") == cmp
    assert digests("continual_mnist5k_issue28/merged/continual.json") == cmp
    assert digests("ablate_mnist5k/ablate.json") == cmp
    assert digests("attacks_mnist5k/compare.json") == cmp
    for key in ("2,5", "2,5,7,1,9"):
        assert digests("multiclass_mnist5k/multiclass.json", "runs", key) == cmp

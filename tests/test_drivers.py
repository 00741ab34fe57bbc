"""The ablate and scenario drivers on a tiny configuration: shapes of the results, reuse, reports."""

import json

import pytest

from cnr_fast import experiments as E
from cnr_fast.errors import UserError
from cnr_fast.experiments import methods as M
from cnr_fast.experiments.runner import kept_model
from cnr_fast.cli import main
from cnr_fast.config import RunConfig

TINY = RunConfig().replace(data={"dataset": "digits", "image_size": 8}, train={"epochs": 1},
                           synth={"gan_epochs": 1, "steps": 2, "batch": 4},
                           reset={"epochs": 1, "stabilize_epochs": 0}, baseline={"epochs": 1, "stabilize_epochs": 0})


pytestmark = pytest.mark.usefixtures("one_thread")


def test_ablate_reuses_synthesis_and_reports_against_full(tmp_path):
    out = tmp_path / "ab"
    argv = ["ablate", "--variants", "relabel-step,b32", "--seeds", "2", "--out", str(out), "--cache-dir",
            str(tmp_path / "cache"), "--dataset", "digits", "--image-size", "8", "--train-epochs", "1",
            "--gan-epochs", "1", "--synth-steps", "2", "--synth-batch", "4", "--reset-epochs", "1",
            "--stabilize-epochs", "0", "--quiet"]
    assert main(argv) == 0
    r = json.loads((out / "ablate.json").read_text())
    assert list(r["variants"]) == ["full", "relabel-step", "b32"]
    t = r["table"]
    assert len(t["full"]["forget_acc"]["values"]) == 2
    assert t["b32"]["forget_acc"]["p_vs_full"] is None or 0 <= t["b32"]["forget_acc"]["p_vs_full"] <= 1
    # relabel-step changes only the reset: it reused full's images, and was charged their time
    assert r["unlearn_time_s"]["relabel-step"]["mean"] > 0
    assert r["sweeps"]["B"] == {"b32": 32, "full": 64} and (out / "ablate_B.png").is_file()
    assert "| variant |" in (out / "ablate.md").read_text()
    # full CNR searches its step size per seed; the variants run at its choice (one candidate), not a search
    for i in range(2):
        full = r["per_seed_choices"]["full"][i]
        assert len(full["validation"]) == 4
        for v in ("relabel-step", "b32"):
            assert list(r["per_seed_choices"][v][i]["validation"]) == [full["chosen"]]
    assert "Settings chosen on validation" in (out / "ablate.md").read_text()
    assert not (tmp_path / "ab.state").exists()  # the resume state goes once the output is written


def test_synthetic_images_reused_only_for_identical_detection_and_synthesis():
    from cnr_fast.data import load_dataset

    ds = load_dataset(TINY.data)
    original, _ = E.train_reference("original", TINY, ds, "cpu", quiet=True)
    shared: dict = {}
    _, info_a, t_a, files_a = E.unlearn_model("cnr", original, ds, TINY, device="cpu", quiet=True, reuse=shared)
    _, info_b, t_b, files_b = E.unlearn_model("cnr", original, ds, TINY.replace(reset={"relabel": "step"}),
                                              device="cpu", quiet=True, reuse=shared)
    assert files_a["synthetic.pt"] == files_b["synthetic.pt"]  # same images
    assert t_b["synthesize"] == pytest.approx(t_a["synthesize"])  # and their time charged again
    _, _, _, files_c = E.unlearn_model("cnr", original, ds, TINY.replace(synth={"sign": "paper"}), device="cpu",
                                       quiet=True, reuse=shared)
    assert files_c["synthetic.pt"] != files_a["synthetic.pt"]


def test_continual_rounds_start_from_the_previous_model_and_seeds_merge(tmp_path):
    # two seeds run one at a time (as separate processes would), then merged
    parts = [E.continual(TINY.replace(seed=s), ["lm", "ssd"], seeds=1, order=(2, 5), device="cpu",
                         cache=str(tmp_path), quiet=True) for s in (0, 1)]
    r = parts[0]
    assert [rd["forget"] for rd in r["rounds"]] == [[2], [2, 5]]
    # logit masking of round 2 masks both classes: its forget accuracy over {2, 5} is exactly 0
    assert r["rounds"][1]["table"]["lm"]["forget_acc"]["mean"] == 0.0
    assert r["rounds"][1]["table"]["retrained"]["forget_acc"]["mean"] == 0.0
    for i, p in enumerate(parts):
        (tmp_path / f"c{i}.json").write_text(json.dumps(p))
    out = tmp_path / "merged"
    assert main(["compare", "--merge", f"{tmp_path / 'c0.json'},{tmp_path / 'c1.json'}", "--out", str(out)]) == 0
    merged = json.loads((out / "continual.json").read_text())
    assert merged["seeds"] == [0, 1] and "| 2 (2,5) |" in (out / "continual.md").read_text()
    assert (out / "continual.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plot against the round
    assert "![continual.png](continual.png)" in (out / "continual.md").read_text()
    # SSD chooses its alpha on validation in every round, and each seed's choice survives the merge
    assert [len(rm["per_seed_choices"]["ssd"]) for rm in merged["rounds"]] == [2, 2]
    assert merged["rounds"][1]["per_seed_choices"]["ssd"][1] == parts[1]["rounds"][1]["per_seed_choices"]["ssd"][0]
    assert merged["rounds"][0]["per_seed_choices"]["lm"] == [None, None]
    assert "Settings chosen on validation, round 2" in (out / "continual.md").read_text()
    for i, rm in enumerate(merged["rounds"]):
        for name in ("retrained", "lm", "ssd"):
            for key in ("forget_acc", "retain_acc", "cka_neg.L4"):
                want = [p["rounds"][i]["table"][name][key]["values"][0] for p in parts]
                assert rm["table"][name][key]["values"] == pytest.approx(want)
                assert rm["table"][name][key]["mean"] == pytest.approx(sum(want) / 2)
    with pytest.raises(UserError, match="disjoint seeds"):
        E.merge_results([parts[0], parts[0]])


def test_multiclass_runs_one_compare_per_set(tmp_path):
    r = E.multiclass(TINY, ["lm"], seeds=1, class_sets=((2, 5),), device="cpu", cache=str(tmp_path), quiet=True)
    run = r["runs"]["2,5"]
    assert run["forget_classes"] == [2, 5] and run["methods"]["lm"]["forget_acc"]["mean"] == 0.0


def test_merge_ablate_equals_one_run_over_both_seeds():
    def fake(seeds, vals):
        per_seed = [{"original": {"forget_acc": 1.0}, "retrained": {"forget_acc": 0.0},
                     "full": {"forget_acc": v}} for v in vals]
        return E.ablate_tables({"seeds": seeds, "variants": {"full": {}}, "config": {"seed": seeds[0]},
                                 "per_seed": per_seed, "per_seed_cka_null": [{} for _ in vals],
                                 "per_seed_times": {"full": [1.0] * len(vals)}, "total_time_s": 1.0})

    both = fake([0, 1], [0.2, 0.4])
    merged = E.merge_ablate([fake([0], [0.2]), fake([1], [0.4])])
    assert merged["table"]["full"]["forget_acc"] == both["table"]["full"]["forget_acc"]
    assert merged["seeds"] == [0, 1]


def _fake_compare(seeds, vals):
    per_seed = [{"original": {"forget_acc": 1.0}, "retrained": {"forget_acc": 0.0},
                 "cnr": {"forget_acc": v}, "lm": {"forget_acc": 0.0}} for v in vals]
    return E.compare_tables({"seeds": seeds, "config": {"seed": seeds[0]}, "chance_acc": 0.1, "per_seed": per_seed,
                              "per_seed_cka_null": [{} for _ in vals],
                              "per_seed_times": {"cnr": [2.0] * len(vals), "lm": [0.1] * len(vals)},
                              "per_seed_reference_times": {"original": [], "retrained": []}, "total_time_s": 1.0})


def test_merge_compare_and_multiclass_equal_one_run_over_all_seeds():
    both = _fake_compare([0, 1, 2], [0.2, 0.4, 0.3])
    merged = E.merge_results([_fake_compare([0], [0.2]), _fake_compare([1, 2], [0.4, 0.3])])
    assert merged["methods"] == both["methods"] and merged["separation"] == both["separation"]
    assert merged["methods"]["lm"]["forget_acc"]["p_vs_cnr"] == pytest.approx(
        __import__("scipy").stats.ttest_rel([0.2, 0.4, 0.3], [0.0, 0.0, 0.0]).pvalue)
    multi = [{"scenario": "multiclass", "runs": {"2,5": _fake_compare([s], [v])}, "total_time_s": 1.0}
             for s, v in ((0, 0.2), (1, 0.4), (2, 0.3))]
    m = E.merge_results(multi)
    assert m["runs"]["2,5"]["methods"] == both["methods"] and m["seeds"] == [0, 1, 2]


def test_merge_reads_the_strict_files_compare_writes_with_a_missing_value(tmp_path):
    """compare.json is strict JSON (a NaN per-seed value written as null); --merge's reading and merging of such
    files (cli.running.merge_files) equals the merge of the results in memory, the NaN read back as NaN (its
    measure is left out of the tests, not an error)."""
    from cnr_fast.runs import atomic_write_json, strict_json

    parts = [_fake_compare([0], [0.2]), _fake_compare([1, 2], [0.4, 0.3])]
    parts[1]["per_seed"][0]["cnr"]["mia_acc"] = 0.5
    parts[1]["per_seed"][1]["cnr"]["mia_acc"] = float("nan")
    for ps in (parts[0]["per_seed"][0], parts[1]["per_seed"][0], parts[1]["per_seed"][1]):
        ps["original"]["mia_acc"] = ps["retrained"]["mia_acc"] = 0.5
        ps["lm"]["mia_acc"] = 0.5
    parts[0]["per_seed"][0]["cnr"]["mia_acc"] = 0.5
    files = []
    for i, r in enumerate(parts):
        atomic_write_json(tmp_path / f"c{i}.json", r)
        files.append(str(tmp_path / f"c{i}.json"))
        assert "NaN" not in (tmp_path / f"c{i}.json").read_text()
    from cnr_fast.cli.running import merge_files

    atomic_write_json(tmp_path / "m.json", merge_files(",".join(files), "compare.json", E.merge_results))
    written = json.loads((tmp_path / "m.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    expect = strict_json(E.merge_results(parts))
    for key in ("methods", "references", "separation", "seeds", "per_seed"):
        assert written[key] == expect[key], key
    assert written["per_seed"][2]["cnr"]["mia_acc"] is None


def test_concat_seeds_merges_optional_lists_only_where_every_file_has_them():
    from cnr_fast.experiments.merge import concat_seeds

    def part(seed, **extra):
        return {"seeds": [seed], "total_time_s": 1.0, "per_seed": [seed], "per_seed_times": {"m": [seed]}, **extra}

    both = concat_seeds([part(0, c={"m": ["a"]}, u={"m": [1]}), part(1, c={"m": ["b"]})], ("per_seed",),
                        ("per_seed_times",), optional=("c", "u"))
    assert both["c"] == {"m": ["a", "b"]} and both["per_seed_times"] == {"m": [0, 1]}
    assert "u" not in both  # seed 0's alone would not cover the merged seeds
    # per-seed records: every file's, or none (the first's alone named only its seeds)
    rc = concat_seeds([part(0, recipe_checks=[{"seed": 0}]), part(1, recipe_checks=[{"seed": 1}])], ("per_seed",), ())
    assert rc["recipe_checks"] == [{"seed": 0}, {"seed": 1}]
    assert "recipe_checks" not in concat_seeds([part(0, recipe_checks=[{"seed": 0}]), part(1)], ("per_seed",), ())


def test_merge_rejects_old_or_mismatched_files(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"seeds": [0], "config": {}, "methods": {}}))  # no per-seed values
    assert main(["compare", "--merge", f"{old},{old}", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    a, b = _fake_compare([0], [0.2]), _fake_compare([1], [0.3])
    b["per_seed_times"].pop("lm")
    with pytest.raises(UserError, match=r"same methods: file 1 has \['cnr', 'lm'\], file 2 \['cnr'\]"):
        E.merge_results([a, b])
    c = _fake_compare([1], [0.3])
    c["config"] = {**c["config"], "reset": {**c["config"].get("reset", {}), "epochs": 99}}
    with pytest.raises(UserError, match=r"file 1 and file 2 differ in reset: None vs \{.epochs.: 99\}"):
        E.merge_results([a, c])


def test_driver_units_resume_after_an_interruption(tmp_path, monkeypatch):
    """continual (compare, multiclass and ablate use the same units) keeps each (seed, round, method) and
    each audit in a RunState; interrupted in round 2, a rerun on the same state loads round 1 (weights
    and torch RNG state) and ends with the uninterrupted run's values. The audit is replaced by a cheap
    function of the weights (what is under test is the units, not the audit). The real stages seed
    every draw, so the cache's state (references trained or loaded) does not change results; a loaded
    unit still restores the torch RNG state its make() left, checked at the end."""
    import torch

    from cnr_fast.resume import RunState

    audits = []

    def fake_audit(models, ds, forget, **kw):
        audits.append(len(forget))
        return {"metrics": {n: {"w": float(sum(p.detach().double().sum() for p in m.parameters()))}
                            for n, m in models.items()}}

    monkeypatch.setattr("cnr_fast.audit.audit_models", fake_audit)
    real = E.unlearn_model
    calls = []

    def counting(method, *a, **kw):
        calls.append(method)
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(method, *a, **kw)

    monkeypatch.setattr(M, "unlearn_model", counting)
    def run(state):
        torch.manual_seed(TINY.seed)  # as the CLI does (prepare_run) before every invocation
        return E.continual(TINY, ["rl", "lm"], seeds=1, order=(2, 5), device="cpu", cache=str(tmp_path / "cache"),
                           quiet=True, state=state)

    stop_at = 0
    want = run(RunState(tmp_path / "a.state", {"k": 1}))
    state = RunState(tmp_path / "b.state", {"k": 1})
    assert state.open() is False
    stop_at = 3  # round 1's RL and LM done, round 1 audited, interrupted in round 2's RL
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run(state)
    assert sorted(p.name for p in state.path.iterdir()) == ["run.json", "s0-r1-audit.pt", "s0-r1-rl.pt"]
    stop_at, calls[:], audits[:] = 0, [], []
    state = RunState(tmp_path / "b.state", {"k": 1})
    assert state.open() is True
    got = run(state)
    assert calls == ["lm", "rl", "lm"]  # round 1's RL loaded, LM (a logit mask, not kept) made again
    assert audits == [2]  # round 1's audit loaded
    assert [rd["per_seed"] for rd in got["rounds"]] == [rd["per_seed"] for rd in want["rounds"]]
    assert got["rounds"][0]["per_seed_times"]["rl"][0] > 0  # the interrupted run's time, kept with its unit

    # a loaded unit leaves the torch RNG where make() left it
    lin = torch.nn.Linear(2, 2)
    torch.manual_seed(5)
    kept_model(state, "rng", lin, lambda: (torch.nn.Linear(2, 2), {"time": 1.0}))
    after = torch.rand(3)
    torch.manual_seed(123)
    model, info = kept_model(state, "rng", lin, lambda: pytest.fail("a kept entry was made again"))
    assert torch.equal(torch.rand(3), after) and info == {"time": 1.0}
    assert not torch.equal(model.weight, lin.weight)  # the kept weights, not the start model's


def test_compare_with_ulira(tmp_path, monkeypatch):
    """compare --ulira-pairs 3: U-LiRA per method (a logit mask is told from the retrained model on every forget
    example; its AUC beside the null's and the original's), the null audited like the methods, the verdict per
    method; each shadow is the method at the setting the seed's own run chose on validation (one candidate, not
    the search), and the choice is recorded with the U-LiRA result."""
    from cnr_fast.experiments import methods as M

    seen, real = [], M.unlearn_model

    def spy(*a, **k):
        out = real(*a, **k)
        method = a[0] if isinstance(a[0], str) else a[0].name  # a name, or what methods.prepare returned
        seen.append((method, M.validation_choice(out[1])))
        return out

    monkeypatch.setattr(M, "unlearn_model", spy)
    r = E.compare(TINY, ["lm", "ssd"], seeds=1, device="cpu", cache=str(tmp_path / "c"), quiet=True, ulira_pairs=3)
    ps = r["per_seed"][0]
    assert "probe_acc.L4" in ps["retrained_null"]
    assert ps["lm"]["ulira_auc"] == 1.0 and r["methods"]["lm"]["ulira_auc"]["mean"] == 1.0
    assert 0 <= ps["lm"]["ulira_null_auc"] < 1.0
    u = r["per_seed_ulira"]["lm"][0]
    assert u["pairs"] == 3 and u["shadow_seeds"] == [TINY.seed + 1, TINY.seed + 2, TINY.seed + 3]
    # the attack's reach: the original, which saw the forget examples, against the retrained reference
    assert ps["original"]["ulira_auc"] == u["original"]["auc"] > 0.9
    assert r["references"]["original"]["ulira_auc"]["mean"] == u["original"]["auc"]
    assert set(r["verdict"]["methods"]) == {"lm", "ssd"}
    md = E.compare_report_md(r)
    assert "## Verdict" in md
    chosen = r["per_seed_choices"]["ssd"][0]["chosen"]
    # the report's U-LiRA rows are the file's numbers: audited, null and reach as AUC / TPR at 1% FPR
    s_u = r["per_seed_ulira"]["ssd"][0]
    row = next(line for line in md.splitlines() if line.startswith(f"| ssd | {r['seeds'][0]} | 3 |"))
    assert (f"| {chosen} | {s_u['audited']['auc']:.2f} / {s_u['audited']['tpr_at_1pct_fpr']:.2f} | "
            f"{s_u['null']['auc']:.2f} / {s_u['null']['tpr_at_1pct_fpr']:.2f} | "
            f"{s_u['original']['auc']:.2f} / {s_u['original']['tpr_at_1pct_fpr']:.2f} |") in row
    assert u["choice"] is None and r["per_seed_ulira"]["ssd"][0]["choice"] == chosen
    ssd = [c for m, c in seen if m == "ssd"]
    assert len(ssd) == 4 and len(ssd[0]["validation"]) == 4  # the run's search, then 3 shadows at its choice
    assert all(list(c["validation"]) == [chosen] for c in ssd[1:])


def test_compare_passes_attacks_to_every_audit(tmp_path, monkeypatch):
    seen = []

    def fake_audit(models, ds, forget, **kw):
        seen.append(kw.get("attacks"))
        return {"metrics": {n: {"forget_acc": 0.0} for n in models}}

    monkeypatch.setattr("cnr_fast.audit.audit_models", fake_audit)
    E.compare(TINY, ["lm"], seeds=2, device="cpu", cache=str(tmp_path / "c"), quiet=True, attacks=True)
    assert seen == [True, True]

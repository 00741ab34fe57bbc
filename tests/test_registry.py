"""A method, an audit metric and a scenario registered from inside this file reach every place that
reads the registries: `unlearn`, `compare`, results.json, report.md and the compare tables, with no
other change. The toy method and metric are real: their numbers are checked against independent
computations."""

import copy
import json

import numpy as np
import pytest
import torch

from cnr_fast.audit import metrics as MM
from cnr_fast.cli import main
from cnr_fast.data import load_dataset
from cnr_fast.config import DataConfig
from cnr_fast.experiments import methods as M
from cnr_fast.experiments import scenarios as S
from cnr_fast.models import model_from_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--dataset", "digits", "--image-size", "8", "--train-epochs", "1", "--quiet"]


def zero_head(original, ds, forget, cfg, *, device, quiet=False, options):
    """A toy method: the original with its head's forget rows zeroed and their biases at options["bias"]."""
    model = copy.deepcopy(original)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        for c in forget:
            head.weight[c] = 0
            head.bias[c] = options["bias"]
    return model.eval(), {"zeroed_rows": list(forget)}


def forget_margin(ctx):
    """A toy metric: mean over forget-class test examples of (true logit - largest other logit)."""
    logits, y = ctx.test.logits.double(), ctx.test.y
    rows = ctx.forget_test
    true = logits[rows].gather(1, y[rows].unsqueeze(1)).squeeze(1)
    other = logits[rows].scatter(1, y[rows].unsqueeze(1), float("-inf")).max(1).values
    return float((true - other).mean())


def _margin_numpy(model, split, forget) -> float:
    """forget_margin computed independently: float64 numpy on the model's outputs, one example at a time."""
    vals = []
    with torch.no_grad():
        for x, y in zip(split.x, split.y.tolist()):
            if y not in forget:
                continue
            xx = x.float().unsqueeze(0)
            if split.x.dtype == torch.uint8:
                xx = xx / 127.5 - 1
            out = model(xx).double().numpy()[0]
            vals.append(out[y] - np.max(np.delete(out, y)))
    return float(np.mean(vals))


@pytest.fixture()
def toys():
    M.register(M.Method("zero-head", zero_head, "baseline", "zero the forget rows of the head (a test toy)",
                        options=(M.Option("bias", float, -1e4, "the forget rows' bias", low=-1e6),)))
    MM.register(MM.Metric("forget_margin", "scalar", "true minus largest other logit on forget test examples",
                          compute=forget_margin))
    yield
    M.unregister("zero-head")
    MM.unregister("forget_margin")


def test_a_registered_method_and_metric_reach_unlearn_and_its_files(tmp_path, toys):
    out = tmp_path / "run"
    assert main(["unlearn", "--method", "zero-head", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--audit", "fast", *TINY]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["method"] == "zero-head"
    m = r["metrics"]
    assert m["unlearned"]["forget_acc"] == 0.0 and m["original"]["forget_acc"] > 0.2
    assert set(m) == {"original", "unlearned", "retrained", "retrained_null"}
    assert all("forget_margin" in v for v in m.values())
    assert "forget_margin" in r["verdict"]["measures"]  # a registered metric is judged by default
    assert "forget_margin" in r["audit"]["definitions"]
    ds = load_dataset(DataConfig(dataset="digits", image_size=8))
    model, _ = model_from_checkpoint(out / "model.pt", ds)
    want = _margin_numpy(model.eval(), ds.test, [2])
    assert m["unlearned"]["forget_margin"] == pytest.approx(want, rel=1e-5, abs=1e-3)
    assert m["unlearned"]["forget_margin"] < -1000 < m["original"]["forget_margin"]
    report = (out / "report.md").read_text()
    assert "zero-head" in report and "forget_margin" in report
    # the CLI's help and `ls` read the registry too
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])


def test_a_method_declares_its_own_option_and_it_reaches_flag_config_and_run(tmp_path, toys, capsys):
    out = tmp_path / "run"
    assert main(["unlearn", "--method", "zero-head", "--zero-head-bias", "-50", "--out", str(out), "--cache-dir",
                 str(tmp_path / "c"), "--audit", "off", *TINY]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method_options"] == {"zero-head": {"bias": -50.0}}
    ds = load_dataset(DataConfig(dataset="digits", image_size=8))
    model, _ = model_from_checkpoint(out / "model.pt", ds)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.bias[2].item() == -50.0 and head.weight[2].abs().sum().item() == 0
    # the option from a config file, and the checks: out of range, undeclared, of no registered method
    conf = tmp_path / "c.json"
    for opts, words in [({"zero-head": {"bias": -1e7}}, "at least -1000000.0"),
                        ({"zero-head": {"bais": 1.0}}, "has no option 'bais'"),
                        ({"zero-hed": {"bias": 1.0}}, "did you mean zero-head")]:
        conf.write_text(json.dumps({"method_options": opts}))
        capsys.readouterr()
        assert main(["unlearn", "--method", "zero-head", "--config", str(conf), "--out", str(tmp_path / "x"),
                     *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
    capsys.readouterr()
    assert main(["ls"]) == 0
    assert "--zero-head-bias float, default -10000.0" in capsys.readouterr().out


def test_a_config_without_method_options_keeps_its_keys():
    """Runs that set no method option hash as before the option table existed (cache and resume keys)."""
    from cnr_fast.config import RunConfig
    d = RunConfig().to_dict()
    assert "method_options" not in d and RunConfig.from_dict(d) == RunConfig()
    c = RunConfig().replace(method_options={"lm": {"a": 1}}).replace(method_options={"lm": {"b": 2}})
    assert c.method_options == {"lm": {"a": 1, "b": 2}} and RunConfig.from_dict(c.to_dict()) == c


def test_a_registered_method_and_metric_reach_compare_and_its_tables(tmp_path, toys, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "zero-head,lm", "--seeds", "1", "--out", str(out), "--cache-dir",
                 str(tmp_path / "c"), *TINY]) == 0
    r = json.loads((out / "compare.json").read_text())
    assert list(r["methods"]) == ["zero-head", "lm"]
    assert r["methods"]["zero-head"]["forget_acc"]["values"] == [0.0]
    assert "forget_margin" in r["methods"]["zero-head"] and "forget_margin" in r["references"]["retrained"]
    assert "forget_margin" in r["separation"]  # judged like every coordinate-free metric
    md = (out / "report.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| metric | original | retrained | null |"))
    assert head.endswith("| zero-head | lm |")  # a column of the table
    assert any(line.startswith("| forget_margin |") for line in md.splitlines())
    capsys.readouterr()
    assert main(["ls"]) == 0
    listing = capsys.readouterr().out
    assert "zero-head" in listing
    # ls lists the metrics and the scenarios, a registered one like a built-in
    assert "\nmetric forget_margin (scalar):" in listing and "\nmetric cka_neg (per_tap):" in listing
    assert "\nscenario no-retain:" in listing and "\nscenario continual:" in listing


def test_a_registered_scenario_runs_merges_and_writes(tmp_path, monkeypatch):
    calls = []

    def run(cfg, methods, seeds, *, device, cache, quiet, ds, state):
        calls.append(list(methods))
        return {"scenario": "echo", "methods": list(methods), "seeds": [cfg.seed + s for s in range(seeds)]}

    def merge(results):
        return {"scenario": "echo", "methods": results[0]["methods"], "seeds": [s for r in results for s in r["seeds"]]}

    def files(result):
        return {"echo.json": result, "echo.md": f"# echo {result['seeds']}\n"}, "echo"

    S.register(S.Scenario("echo", "a test scenario", run, merge, files))
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        assert main(["compare", "--scenario", "echo", "--methods", "lm", "--seeds", "2", "--out", str(a), *TINY]) == 0
        assert calls == [["lm"]] and json.loads((a / "echo.json").read_text())["seeds"] == [0, 1]
        assert main(["compare", "--scenario", "echo", "--methods", "lm", "--seed", "5", "--seeds", "1", "--out", str(b),
                     *TINY]) == 0
        m = tmp_path / "m"
        assert main(["compare", "--merge", f"{a / 'echo.json'},{b / 'echo.json'}", "--out", str(m)]) == 0
        assert (m / "echo.md").read_text() == "# echo [0, 1, 5]\n"
    finally:
        S.unregister("echo")


def test_a_method_setting_no_method_run_reads_is_named(capsys, tmp_path, monkeypatch):
    """--baseline-epochs never reached RL (it runs --salun-epochs): the log says which methods read a flag."""
    import argparse

    from cnr_fast.cli.args import note_flags_not_taken

    args = argparse.Namespace(baseline_epochs=2, salun_epochs=None, reset_lr=0.001)
    note_flags_not_taken(args, ["rl", "roft", "lm"])
    err = capsys.readouterr().err
    assert "--baseline-epochs is read by roft; not by rl" in err
    assert "--reset-lr is read by none of the methods run" in err
    note_flags_not_taken(argparse.Namespace(salun_epochs=1), ["rl", "lm"])
    assert capsys.readouterr().err == ""  # LM has no settings to miss

    # ablate: every variant is CNR, so a baseline's flag is named once the inputs are checked, before any work
    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr("cnr_fast.cli.ablate.driver_state", stop)
    with pytest.raises(Stop):
        main(["ablate", "--variants", "no-synthesis", "--baseline-epochs", "3", "--out", str(tmp_path / "out"),
              "--dataset", "digits"])
    assert "--baseline-epochs is read by none of the methods run; not by cnr" in capsys.readouterr().err


def test_every_builtin_method_declares_the_training_data_it_reads():
    """#29: forget / retain images, labels: declared per method, in words for ls, results.json and reports."""
    from cnr_fast.experiments import methods as M

    for m in M.names():
        assert M.resolve(m, None)[0].needs is not None, m
    assert M.data_needs("lm") == "none"
    assert M.data_needs("roft") == "retain images, with labels"
    assert M.data_needs("cnr-raw") == M.data_needs("cnr") == "forget and retain images, with labels"
    with pytest.raises(ValueError, match="needs"):
        M.Method("bad", run=lambda *a, **k: None, needs=("forget", "pixels"))


def test_no_retain_gives_the_methods_the_forget_images_alone(tmp_path, capsys):
    """Scenario no-retain: a method declaring needs=("forget",) trains on the forget-class images alone; one
    that needs retain data is listed as not applicable and not run (not silently fed); the audit is unchanged."""
    seen = []

    def forget_only(original, ds, forget, cfg, *, device, quiet=False):
        seen.append(sorted(set(ds.train.y.tolist())))
        return zero_head(original, ds, forget, cfg, device=device, quiet=quiet, options={"bias": -10.0})

    M.register(M.Method("forget-only", forget_only, needs=("forget",)))
    try:
        out = tmp_path / "nr"
        assert main(["compare", "--scenario", "no-retain", "--methods", "forget-only,rl,lm", "--seeds", "1",
                     "--out", str(out), "--cache-dir", str(tmp_path / "c"), *TINY]) == 0
        r = json.loads((out / "compare.json").read_text())
        assert seen == [r["forget_classes"]]  # the forget classes' images, nothing else
        assert r["scenario"] == "no-retain" and r["train_data"] == "forget"
        assert list(r["methods"]) == ["forget-only", "lm"] and list(r["not_applicable"]) == ["rl"]
        assert "retain-class images" in r["not_applicable"]["rl"]
        assert r["methods"]["forget-only"]["forget_acc"]["values"] == [0.0]
        assert r["splits"]["train"] > len(r["forget_classes"]) * 200  # the audit's splits are the whole dataset's
        report = (out / "report.md").read_text()
        assert "Not run: rl, which needs retain-class images" in report
        assert "chosen on the validation split's retain-class images" in report  # what no-retain still reads
        # without --methods, no-retain runs every method that can run on the forget images (not the default set)
        from cnr_fast.cli.compare import default_methods
        from cnr_fast.experiments.scenarios import get as get_scenario

        nr = default_methods(get_scenario("no-retain"))
        assert {"forget-only", "jit", "lm"} <= set(nr) and not {"rl", "cnr", "ssd-lf", "bad-teacher"} & set(nr)
        assert default_methods(get_scenario("single")) == list(M.names(default_only=True))
        capsys.readouterr()
        assert main(["compare", "--scenario", "no-retain", "--methods", "rl,roft", "--seeds", "1", "--out",
                     str(tmp_path / "none"), *TINY]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "none of the methods can run" in err[0] and "forget-only" in err[0]
        assert not (tmp_path / "none").exists()
    finally:
        M.unregister("forget-only")


def test_a_headline_metric_registered_from_outside_reaches_ablate_and_the_scenario_reports(tmp_path):
    """A metric registered with headline=True is a column of ablate.md and a table of the continual report
    and of compare's short tables (multiclass), which otherwise show a fixed list of built-in measures; one
    without it is not."""
    MM.register(MM.Metric("forget_margin", "scalar", "true minus largest other logit on forget test examples",
                          compute=forget_margin, headline=True))
    MM.register(MM.Metric("quiet_margin", "scalar", "the same, not a headline", compute=forget_margin))
    try:
        abl = tmp_path / "abl"
        assert main(["ablate", "--variants", "no-synthesis", "--seeds", "1", "--gan-epochs", "1", "--synth-steps", "2",
                     "--reset-epochs", "1", "--stabilize-epochs", "0", "--out", str(abl), "--cache-dir",
                     str(tmp_path / "c"), *TINY]) == 0
        head = next(line for line in (abl / "ablate.md").read_text().splitlines() if line.startswith("| variant |"))
        assert "forget_margin" in head and "quiet_margin" not in head
        # the scenario reports: continual's per-measure tables, and multiclass's (compare's short tables), on
        # results of the form the drivers write (each column from ablate's run above, so no more training)
        from cnr_fast.experiments.reports import compare_report_md, scenario_report_md

        table = {n: dict(v) for n, v in json.loads((abl / "ablate.json").read_text())["table"].items()}
        cont = {"scenario": "continual", "dataset": "digits", "order": [2], "seeds": [0],
                "rounds": [{"forget": [2], "table": {"original": table["original"], "lm": table["full"]}}]}
        md = scenario_report_md(cont)
        assert "### forget_margin" in md and "quiet_margin" not in md
        r = json.loads((abl / "ablate.json").read_text())
        short = compare_report_md({**r, "methods": {"lm": table["full"]}, "splits": {"train": 1, "val": 1, "test": 1},
                                   "references": {"original": table["original"], "retrained": table["retrained"],
                                                  "null": {}, "chance_acc": 0.1}, "reference_init": "independent",
                                   "unlearn_time_s": {"lm": {"mean": 0.0}}}, short=True)
        assert "| forget_margin |" in short and "quiet_margin" not in short
    finally:
        MM.unregister("forget_margin")
        MM.unregister("quiet_margin")


def test_methods_metrics_and_scenarios_share_one_kind_of_registry():
    """The same rules everywhere (cnr_fast/registry.py): a taken name is refused unless replaced, an unknown
    name gets the closest ones in one line, a built-in cannot be removed, a registered entry can."""
    from cnr_fast.errors import UserError
    from cnr_fast.experiments import scenarios as S

    for reg, builtin, typo in ((M._all(), "ssd", "ssdd"), (MM.REGISTRY, "cka_neg", "cka_nge"),
                               (S.SCENARIOS, "continual", "continous")):
        with pytest.raises(ValueError, match="already registered"):
            reg.register(reg[builtin])
        assert reg.register(reg[builtin], replace=True) is reg[builtin]
        with pytest.raises(UserError, match=rf"unknown {reg.kind} '{typo}' \(did you mean {builtin}"):
            reg.find(typo)
        with pytest.raises(ValueError, match="built-in"):
            reg.unregister(builtin)
        assert builtin in reg.names()
    S.register(S.Scenario("toy", "a toy", run=None, merge=None, files=None))
    assert "toy" in S.SCENARIOS
    S.unregister("toy")
    assert "toy" not in S.SCENARIOS
    with pytest.raises(UserError, match="did you mean no-retain"):
        S.get("no-retian")


def test_a_scenario_with_its_own_classes_says_when_the_data_has_too_few(tmp_path, capsys):
    """multiclass and continual forget fixed class indices (up to 9); on a 3-class image folder the one line
    says so and points at --scenario single, not at --forget (which they refuse)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "img" / c / f"{i}.png")
    for scenario, need in (("multiclass", 10), ("continual", 10)):
        capsys.readouterr()
        assert main(["compare", "--scenario", scenario, "--methods", "lm", "--seeds", "1", "--dataset",
                     f"imagefolder:{tmp_path / 'img'}", "--image-size", "8", "--train-epochs", "1", "--quiet",
                     "--out", str(tmp_path / scenario)]) == 2
        err = [line for line in capsys.readouterr().err.strip().splitlines() if "warning:" not in line]
        assert len(err) == 1 and f"needs at least {need} classes" in err[0] and "--scenario single" in err[0], err
        assert "--forget with values" not in err[0]

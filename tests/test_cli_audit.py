"""`cnr-fast audit` end to end on tiny models trained here, and its bad-input exits."""

import json

import pytest
import torch

from cnr_fast.cli import main
from cnr_fast.config import DataConfig, TrainConfig
from cnr_fast.data import load_dataset
from cnr_fast.models import build_model, model_meta
from cnr_fast.runs import save_checkpoint
from cnr_fast.train import train_classifier

ARCH, WIDTH = "resnet18", 0.0625


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread was ~6x faster on a loaded 2-core machine


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("ckpts")
    ds = load_dataset(DataConfig(dataset="digits"))
    cfg = TrainConfig(epochs=1, batch_size=64)
    small = ds.train.subset(slice(0, 300))
    paths = {}
    for name, split, extra, seed in (("original", small, {}, 0),
                                     ("retrained", small.subset(small.y != 2), {"forget_classes": [2]}, 0),
                                     ("null", small.subset(small.y != 2), {"forget_classes": [2]}, 1)):
        torch.manual_seed(seed)
        m = build_model(ARCH, 10, 1, 28, WIDTH)
        train_classifier(m, split, cfg, device=torch.device("cpu"), quiet=True)
        paths[name] = d / f"{name}.pt"
        save_checkpoint(paths[name], m, {**model_meta(ARCH, WIDTH, ds), **extra})
    # audited = the original behind a logit mask (the LM baseline's checkpoint format)
    state = torch.load(paths["original"], weights_only=True)
    paths["audited"] = d / "lm.pt"
    save_checkpoint(paths["audited"], _load(paths["original"]), {**state["meta"], "forget_classes": [2],
                                                                 "logit_mask": [2], "method": "lm"})
    # bad inputs
    paths["vit"] = d / "vit.pt"
    save_checkpoint(paths["vit"], build_model("vit_tiny", 10, 1, 28), model_meta("vit_tiny", 1.0, ds))
    paths["five"] = d / "five.pt"
    save_checkpoint(paths["five"], build_model(ARCH, 5, 1, 28, WIDTH), {**model_meta(ARCH, WIDTH, ds), "num_classes": 5})
    paths["bare_wide"] = d / "bare_wide.pt"
    torch.save(build_model(ARCH, 10, 1, 28, 0.125).state_dict(), paths["bare_wide"])
    paths["other_forget"] = d / "other_forget.pt"
    save_checkpoint(paths["other_forget"], _load(paths["retrained"]), {**model_meta(ARCH, WIDTH, ds),
                                                                       "forget_classes": [3]})
    paths["other_data"] = d / "other_data.pt"
    save_checkpoint(paths["other_data"], _load(paths["retrained"]), {**model_meta(ARCH, WIDTH, ds),
                                                                     "forget_classes": [2], "n_train": 999})
    return paths


def _load(path):
    m = build_model(ARCH, 10, 1, 28, WIDTH)
    m.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    return m


def _args(p, out, *extra, checkpoint="audited", retrained="retrained"):
    a = ["audit", "--checkpoint", str(p[checkpoint]), "--original", str(p["original"]), "--out", str(out),
         "--dataset", "digits", "--device", "cpu", "--quiet", "--probe-train-size", "300",
         "--force"]  # the models trained 1 epoch on 300 images: near chance on purpose, past the input checks
    if retrained:
        a += ["--retrained", str(p[retrained])]
    return a + list(extra)


def test_audit_end_to_end(ckpts, tmp_path):
    out = tmp_path / "audit"
    assert main(_args(ckpts, out, "--taps", "L3,L4")) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["metrics"]) == {"original", "unlearned", "retrained"}
    a, o = res["metrics"]["unlearned"], res["metrics"]["original"]
    for key in ("forget_acc", "retain_acc", "probe_acc", "probe_overall_acc", "transfer_probe_acc", "knn_acc",
                "svm_acc", "cka_pos", "cka_neg", "fewshot_probe_acc", "relearn_acc", "mia_acc", "nn_purity",
                "selectivity_delta"):
        assert key in a
    assert a["forget_acc"] == 0.0  # logit mask
    assert a["probe_acc"] == o["probe_acc"]  # same hidden states: the mask hides nothing from a probe
    assert a["cka_neg"]["L4"] == pytest.approx(1.0, abs=1e-6)
    assert res["references"]["retrained"] == "retrained" and "distance_to_retrained" in res["references"]
    assert res["run"]["methods"] == {"unlearned": "lm"}
    md = (out / "report.md").read_text()
    assert f"{a['probe_acc']['L4']:.4f}" in md and (out / "report.html").stat().st_size > 1000
    assert (out / "figures" / "tsne.png").is_file()


def test_audit_with_a_null_gives_the_verdict(ckpts, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(_args(ckpts, out, "--taps", "L4", "--no-figures", "--null", str(ckpts["null"]))) == 0
    res = json.loads((out / "results.json").read_text())
    v = res["verdict"]
    assert "retrained_null" in res["metrics"] and set(v["models"]) == {"unlearned"}
    assert v["references"]["null"] == "retrained_null"
    fa = v["measures"]["forget_acc"]
    if fa["separates"]:  # the logit mask gives forget accuracy 0, as the retrained model does
        assert fa["models"]["unlearned"]["zone"] == "with_retrained"
    assert (out / "report.md").read_text().index("## Verdict") < (out / "report.md").read_text().index("## Headline")


def test_help_explains_numbers(capsys):
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    text = capsys.readouterr().out
    assert "cnr-fast audit --checkpoint" in text and "transfer_probe_acc" in text and "0.5 = no signal" in text


@pytest.mark.parametrize("case,extra,needle", [
    ("missing_layer", ["--layers", "L3,L7"], "L7"),  # the old name still works
    ("missing_tap", ["--taps", "L3,L7"], "L7"),
    ("other_class_count", [], "classes"),
    ("other_arch_meta", ["--arch", "resnet18"], "vit_tiny"),
    ("other_arch_bare", ["--arch", "resnet18", "--width", "0.0625"], "does not fit"),
    ("other_forget", [], "trained on other splits"),
    ("other_data", [], "trained on other splits"),
    ("missing_file", [], "does not exist"),
    ("bad_forget", ["--forget", "two"], "forget class 'two' is not a class of 'digits'"),  # names as unlearn takes them
])
def test_bad_input_exits_2(ckpts, tmp_path, capsys, case, extra, needle):
    kw = {}
    if case == "other_class_count":
        kw["checkpoint"] = "five"
    elif case == "other_arch_meta":
        kw["checkpoint"] = "vit"
    elif case == "other_arch_bare":
        kw["checkpoint"] = "bare_wide"
    elif case == "other_forget":
        kw["retrained"] = "other_forget"
    elif case == "other_data":
        kw["retrained"] = "other_data"
    args = _args(ckpts, tmp_path / "o", *extra, **kw)
    if case == "missing_file":
        args[args.index("--original") + 1] = str(tmp_path / "nope.pt")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnr-fast audit: error:") and needle in err[0], err
    assert not (tmp_path / "o" / "results.json").exists()

"""audit_models end to end on a tiny synthetic dataset, and the report writers."""

import copy
import json
import math

import pytest
import torch

from cnr_fast.audit import audit_models, json_view, probe_train_indices, write_report
from cnr_fast.audit.relearn import relearn_split
from cnr_fast.audit.report import fmt
from cnr_fast.data import Dataset, Split

CONTRACT = ("forget_acc", "retain_acc", "probe_acc", "probe_overall_acc", "transfer_probe_acc", "knn_acc", "svm_acc",
            "cka_pos", "cka_neg", "fewshot_probe_acc", "relearn_acc", "mia_acc", "nn_purity", "selectivity_delta")


def _ds(n_train=200, n_test=100):
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 10
        x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        x[:, :, :4, :4] = (y * 25).to(torch.uint8).view(-1, 1, 1, 1)  # a weak planted class cue
        return Split(x, y)

    return Dataset("synthetic", split(n_train), split(n_test), 10, [str(i) for i in range(10)])


@pytest.fixture(scope="module")
def result():
    pytest.importorskip("sklearn", reason="the audit's membership-inference attack fits sklearn models")
    from cnr_fast.models import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _audit(build_model)
    finally:
        torch.set_num_threads(threads)


def _audit(build_model):
    torch.manual_seed(0)
    original = build_model("resnet18", 10, 1, 28, 0.0625).eval()
    models = {"original": original, "unlearned": copy.deepcopy(original),
              "retrained": build_model("resnet18", 10, 1, 28, 0.0625).eval()}
    with torch.no_grad():  # an "unlearned" model: the original with its forget logit pushed down
        models["unlearned"].fc.bias[2] -= 50.0
    return audit_models(models, _ds(), [2], device="cpu", retrained="retrained", taps=["L3", "L4"], shots=(1, 5),
                        quiet=True, figures=True, relearn_steps=3, attacks=True,
                        null_model=build_model("resnet18", 10, 1, 28, 0.0625).eval())


def test_contract_keys_and_definitions(result):
    for name in ("original", "retrained"):
        m = result["metrics"][name]
        for key in CONTRACT:
            if name == "retrained" and key in ("transfer_probe_acc", "selectivity_delta"):
                assert key not in m  # coordinate-bound: not for an independently trained model
                continue
            assert key in m, key
        assert set(m["probe_acc"]) == {"L3", "L4"} and set(m["relearn_acc"]) == {"1", "5"}
        # Table 10's probes, at every tap (both taps keep a spatial map at 28 px)
        assert set(m["mlp_probe_acc"]) == {"L3", "L4"} and set(m["conv_probe_acc"]) == {"L3", "L4"}
        assert all(0 <= v <= 1 for v in m["mlp_probe_acc"].values())
        assert set(m["mlp_probe_overall_acc"]) == {"L3", "L4"} and set(m["conv_probe_overall_acc"]) == {"L3", "L4"}
        assert 0 <= m["inversion_judge_rate"] <= 1 and 0 <= m["inversion_audited_confidence"] <= 1
        assert 0 <= m["gradcam_overlap"] <= 1 + 1e-6
        for key in m:
            assert key in result["definitions"], f"{key} has no definition"
    o = result["metrics"]["original"]
    assert o["gradcam_overlap"] == pytest.approx(1.0, abs=1e-6)  # the original against itself
    assert result["settings"]["gradcam_overlap"]["tap"] == "L3"
    assert all(set(c) == {"L3", "L4"} for c in result["_figures"]["gradcam"].values())  # a CNN: both taps drawn
    assert "attention_heads" not in result  # a CNN has no attention head
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in o["cka_pos"].values())
    assert o["transfer_probe_acc"] == o["probe_acc"]
    assert all(v == 0.0 for v in o["selectivity_delta"].values())
    refs = result["references"]
    # the null model is audited like every independent model and gives the CKA null and the verdict
    null = result["metrics"]["retrained_null"]
    assert "transfer_probe_acc" not in null and "probe_acc" in null
    assert set(refs["cka_null"]["neg"]) == {"L3", "L4"} and "retrained_null" in refs["independent"]
    assert set(result["verdict"]["models"]) == {"unlearned"}
    assert result["verdict"]["n_forget"] == 10
    assert refs["chance"]["mia_acc"] == 0.5 and refs["chance"]["probe_acc"] == pytest.approx(0.1)
    assert refs["distance_to_retrained"]["retrained"]["probe_acc"] == 0.0
    json.dumps(json_view(result))  # JSON-able without the figure arrays


def _leaves(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _leaves(v)
        elif isinstance(v, float):
            yield v


def test_report_numbers_equal_dict(result, tmp_path):
    paths = write_report(tmp_path, result, {"checkpoint": "x.pt"})
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert any(p.endswith("tsne.png") for p in paths) and any(p.endswith("gradcam.png") for p in paths)
    assert "data:image/png;base64," in html and "<img" in html
    for m in result["metrics"].values():
        for v in _leaves(m):
            if not math.isnan(v):
                assert fmt(v) in md and fmt(v) in html
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no leftovers
    # the verdict comes first: before the figures and the tables, one sentence per audited model
    v = result["verdict"]
    for doc in (md, html):
        assert doc.index("Verdict") < doc.index("depth_curves") < doc.index("Headline") < doc.index("Definitions")
        assert v["models"]["unlearned"]["sentence"] in doc
        for k in v["measures"]:
            assert k in doc


def test_probe_train_is_stratified():
    y = torch.arange(1000) % 10
    idx = probe_train_indices(y, 200, seed=1)
    assert len(idx) == 200 and torch.bincount(y[idx]).tolist() == [20] * 10
    assert torch.equal(probe_train_indices(y, 5000), torch.arange(1000))


def test_relearn_split_sizes():
    ds = _ds()
    sp = relearn_split(ds.train, [2], 5, seed=0)
    assert (sp.y == 2).sum() == 5 and (sp.y != 2).sum() == 5


def test_vit_audit_has_the_attention_head_table(tmp_path):
    """On a ViT the audit adds Table 6's per-head attention table (the original's change against itself 0)
    and the report shows it."""
    from cnr_fast.models import build_model

    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 10
        return Split(torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8), y)

    ds = Dataset("synthetic16", split(100), split(60), 10, [str(i) for i in range(10)])
    torch.manual_seed(0)
    vit = [build_model("vit_tiny", 10, 1, 16, 1.0).eval() for _ in range(3)]
    r = audit_models({"original": vit[0], "unlearned": copy.deepcopy(vit[0]), "retrained": vit[1]}, ds, [2],
                     retrained="retrained", null_model=vit[2], quiet=True, figures=False, relearn=False, shots=(1,))
    att = r["attention_heads"]
    assert set(att["models"]) == {"original", "unlearned", "retrained", "retrained_null"}
    assert att["models"]["original"]["change"]["global"] == 0.0
    assert att["models"]["unlearned"]["global"] == pytest.approx(att["models"]["original"]["global"])
    write_report(tmp_path, r, {})
    assert "Attention heads (paper Table 6)" in (tmp_path / "report.md").read_text()

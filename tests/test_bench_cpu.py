"""bench/bench_cpu_stages.py (--quick) and bench/cost_model.py: they run, write JSON, and count right."""

import json
import math

import pytest
import torch

from bench import bench_cpu_stages, cost_model


def test_stage_bench_quick_writes_a_ratio_per_stage(tmp_path, one_thread):
    assert bench_cpu_stages.main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "cpu_stages_cpu_quick.json").read_text())
    assert set(data["ratios"]) == set(bench_cpu_stages.STAGES)
    for stage, row in data["stages"].items():
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, stage  # the speed itself is not asserted
        assert row["same_result"], (stage, row["same_result_max_abs_diff"])  # plain loop = same arithmetic
    assert data["precision"]["ratio_bf16_over_fp32"] > 0
    m = data["machine"]
    assert m["cpu_model"] and "load_avg_1_5_15" in m and "cpu_vector_flags" in m


def test_conv_flops_hand_formula():
    # 3x3 conv, 64 -> 64 channels, 32x32 output (ResNet-18 CIFAR layer1): 2 * 64 * 64 * 9 * 32 * 32
    assert cost_model.conv2d_flops(64, 64, 3, 32, 32) == 75_497_472
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    with FlopCounterMode(display=False) as fc:
        conv(torch.randn(1, 64, 32, 32))
    assert fc.get_total_flops() == cost_model.conv2d_flops(64, 64, 3, 32, 32)


def test_traced_resnet18_matches_hand_count():
    """ResNet-18, CIFAR stem, width 1, 3x32x32: conv + fc FLOPs added up layer by layer by hand."""
    hand = cost_model.conv2d_flops(3, 64, 3, 32, 32)  # stem
    side, cin = 32, 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        side //= stride
        hand += cost_model.conv2d_flops(cin, cout, 3, side, side)  # block 1, conv1 (strided)
        hand += cost_model.conv2d_flops(cout, cout, 3, side, side)  # block 1, conv2
        if stride != 1 or cin != cout:
            hand += cost_model.conv2d_flops(cin, cout, 1, side, side)  # downsample
        hand += 2 * cost_model.conv2d_flops(cout, cout, 3, side, side)  # block 2
        cin = cout
    hand += cost_model.linear_flops(512, 10)
    from cnr_fast.models import build_model

    net = cost_model.trace_net(lambda: build_model("resnet18", 10, 3, 32, 1.0), (3, 32, 32))
    assert net["flops_fwd_per_image"] == hand
    assert net["measured_backward_over_forward"] == pytest.approx(2.0, rel=0.02)  # the 2F convention holds
    assert net["params"] == 11_173_962


def test_reset_stage_flops_by_hand():
    """Reset = 10 epochs x (45,000 retain + 32 synthetic per step of 128) x 3F; stabilise = 5 x 45,000 x 3F."""
    s = cost_model.SETTINGS[0]
    F = 1_000_000  # any per-image forward cost: the stage arithmetic is linear in it
    fake = {"flops_fwd_per_image": F, "flops_bwd_per_image": 2 * F, "act_bytes_fwd_per_image": 1,
            "act_bytes_bwd_per_image": 1, "params": 10, "param_tensors": 2, "kernels_fwd": 1, "kernels_bwd": 1}
    nets = {"classifier": fake, "generator": fake, "discriminator": fake, "classifier_frozen": fake}
    st = cost_model.stage_costs(s, nets)
    assert s.n_retain == 45_000
    steps = math.ceil(45_000 / 128)  # 352
    assert st["reset"]["steps"] == 10 * steps
    assert st["reset"]["flops"] == 10 * (45_000 + 32 * steps) * 3 * F
    assert st["stabilize"]["flops"] == 5 * 45_000 * 3 * F
    assert st["detect"]["flops"] == 50_000 * F
    assert st["latents"]["flops"] == 500 * 64 * 3 * (F + F + F)
    assert st["gan"]["flops"] == 50 * 5_000 * (3 * F + 9 * F) and st["gan"]["batch"] == 64
    # the roofline time at peak of the reset stage
    t = st["reset"]["flops"] / cost_model.H100["peak_bf16_dense_flops"]
    assert t == pytest.approx(10 * 56_264 * 3 * F / 989e12)


def test_cost_model_writes_json(tmp_path):
    assert cost_model.main(["--settings", "resnet18_cifar10", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "cost_model.json").read_text())
    res = data["settings"]["resnet18_cifar10"]
    assert set(res["stages"]) == {"detect", "gan", "latents", "reset", "stabilize", "audit_features"}
    assert res["total"]["dominant_stage"] in res["stages"]
    assert data["assumptions"]["hardware"]["peak_bf16_dense_flops"] == 989e12
    assert all(r["h100_s_model"] > 0 and r["dp8_speedup"] > 0 for r in res["stages"].values())


def test_cost_vs_retrain_interleaves_rounds_and_takes_the_median_ratio(tmp_path, one_thread):
    """Every round times RFS and each method (order rotated), and the file's ratio is the median over rounds
    of RFS time / method time, recomputed here from the recorded times."""
    from bench import bench_cost_vs_retrain as B

    assert B.main(["--dataset", "digits", "--image-size", "8", "--train-epochs", "1", "--methods", "lm,ssd",
                   "--rounds", "3", "--threads", "1", "--out", str(tmp_path), "--name", "c"]) == 0
    d = json.loads((tmp_path / "c.json").read_text())
    assert [r["order"] for r in d["rounds"]] == [["rfs", "lm", "ssd"], ["lm", "ssd", "rfs"], ["ssd", "rfs", "lm"]]
    for m in ("lm", "ssd"):
        ratios = [r["rows"]["rfs"]["time_s"] / r["rows"][m]["time_s"] for r in d["rounds"]]
        assert d["retrain_time_over_method_time_per_round"][m] == pytest.approx(ratios)
        assert d["retrain_time_over_method_time"][m] == pytest.approx(sorted(ratios)[1])
    assert all(0 <= r["rows"]["rfs"]["forget_acc"] <= 1 and r["rows"]["ssd"]["load_before"] for r in d["rounds"])
    assert d["machine"]["git_sha"] and "load_avg_before" in d["machine"]
    with pytest.raises(SystemExit) as e:
        B.main(["--methods", "nope", "--out", str(tmp_path)])
    assert e.value.code == 2

"""CNR stages and baselines on tiny shapes, against independent computations."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from cnr_fast import ops
from cnr_fast.config import DetectConfig, ResetConfig, RunConfig, SynthConfig
from cnr_fast.data import Split, to_float
from cnr_fast.errors import UserError
from cnr_fast.models import LogitMask, Taps, build_model
from cnr_fast.cnr.detect import class_means, detect
from cnr_fast.cnr.reset import l2_pull, reset
from cnr_fast.cnr.synthesize import Discriminator, Generator, optimise_latents

CPU = torch.device("cpu")


def tiny_split(n=30, classes=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    y[-1] = classes - 1  # make sure every class is present
    return Split(x, y)


def tiny_model(classes=3, size=12):
    torch.manual_seed(0)
    return build_model("resnet18", classes, 1, size, width=0.0625).eval()


def test_class_means_match_per_example_loop():
    split, model = tiny_split(), tiny_model()
    means, shapes, counts = class_means(model, split, ["L1", "L4"], 3, device=CPU, batch_size=7, quiet=True)
    with torch.no_grad():
        per = {"L1": [], "L4": []}
        for i in range(len(split)):  # independent: one example at a time
            with Taps(model, ["L1", "L4"], detach=True) as t:
                model(to_float(split.x[i : i + 1]))
            for k in per:
                per[k].append(t[k].reshape(-1).double())
    for k in per:
        stack = torch.stack(per[k])
        for c in range(3):
            exp = stack[split.y == c].mean(0)
            torch.testing.assert_close(means[k][c].double(), exp, atol=1e-5, rtol=1e-4)
    assert counts.tolist() == torch.bincount(split.y).tolist()
    assert shapes["L1"][0] == 4 and len(shapes["L4"]) == 3


def test_detect_units_are_topk_of_selectivity():
    split, model = tiny_split(), tiny_model()
    det = detect(model, split, [1], 3, DetectConfig(taps=("L2", "L3"), k=3), device=CPU, quiet=True)
    means, _, _ = class_means(model, split, ["L2", "L3"], 3, device=CPU, quiet=True)
    for t in ("L2", "L3"):
        s = means[t][1] - (means[t][0] + means[t][2]) / 2
        torch.testing.assert_close(det.selectivity[t][0], s)
        assert set(det.f_idx[t][0].tolist()) == set(torch.topk(s, 3).indices.tolist())
        assert set(det.r_idx[t][0].tolist()) == set(torch.topk(-s, 3).indices.tolist())
    summary = det.summary()
    assert len(summary["L2"]["classes"]["1"]["forget_units"][0]) == 3  # (c, h, w)


@pytest.mark.parametrize("selection", ["random", "gradient"])
def test_detect_ablation_selections(selection):
    split, model = tiny_split(), tiny_model()
    det = detect(model, split, [0, 2], 3, DetectConfig(taps=("L3",), k=2, selection=selection), device=CPU,
                 quiet=True)
    assert det.f_idx["L3"].shape == (2, 2) and det.r_idx["L3"].shape == (2, 2)
    if selection == "random":
        for i in range(2):
            assert not set(det.f_idx["L3"][i].tolist()) & set(det.r_idx["L3"][i].tolist())


def test_k_larger_than_half_a_layer_is_refused():
    split, model = tiny_split(), tiny_model()
    with pytest.raises(UserError, match="larger than half"):
        detect(model, split, [1], 3, DetectConfig(taps=("L4",), k=10_000), device=CPU, quiet=True)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (8, 1), (64, 3)])
def test_generator_discriminator_shapes(size, channels):
    g, d = Generator(16, channels, size, 8), Discriminator(channels, size, 8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3,)


@pytest.mark.parametrize("sign", ["excite", "paper"])
def test_latent_optimisation_moves_selective_loss_and_freezes_models(sign):
    model = tiny_model(size=16)
    g, d = Generator(8, 1, 16, 8).eval(), Discriminator(1, 16, 8).eval()
    taps = ["L2", "L3"]
    fi = {t: torch.tensor([0, 1]) for t in taps}
    ri = {t: torch.tensor([5, 6]) for t in taps}
    cfg = SynthConfig(latent_dim=8, batch=6, steps=25, lr=0.05, sign=sign, lambda_real=0.0, lambda_smooth=0.0)
    before = copy.deepcopy(model.state_dict())
    x, log = optimise_latents(model, g, d, fi, ri, taps, cfg, device=CPU, quiet=True)
    assert x.shape == (6, 1, 16, 16)
    if sign == "excite":  # minimises -(A_f - alpha A_r): the eq. 6 value goes up
        assert log["selective_after"] > log["selective_before"]
    else:
        assert log["selective_after"] < log["selective_before"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.requires_grad for p in model.parameters())


def test_l2_pull_hand_computed():
    m = torch.nn.Linear(2, 1)
    theta0 = [p.detach().clone() for p in m.parameters()]
    with torch.no_grad():
        m.weight += torch.tensor([[1.0, 2.0]])
        m.bias -= 3.0
    assert float(l2_pull(m, theta0)) == pytest.approx(1 + 4 + 9)


def test_reset_leaves_original_untouched_and_zero_epochs_is_identity():
    split, model = tiny_split(), tiny_model()
    before = copy.deepcopy(model.state_dict())
    synth = torch.rand(4, 1, 12, 12) * 2 - 1
    m0, _ = reset(model, split.of_classes([0, 2]), synth, [0, 2], ResetConfig(epochs=0, stabilize_epochs=0, lr=1e-4),
                  device=CPU, quiet=True)
    for k, v in m0.state_dict().items():
        assert torch.equal(v, before[k])
    m1, log = reset(model, split.of_classes([0, 2]), synth, [0, 2],
                    ResetConfig(epochs=1, stabilize_epochs=1, batch_size=8, synth_batch_size=2, lr=1e-4), device=CPU,
                    quiet=True)
    assert set(log["synthetic_labels"]) <= {0, 2}
    assert any(not torch.equal(v, before[k]) for k, v in m1.state_dict().items() if v.is_floating_point())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_gau_ascent_bound_gives_no_gradient_past_chance():
    logits = torch.zeros(4, 10, requires_grad=True)
    with torch.no_grad():
        logits[:, 3] = -20.0  # true class 3 far below: CE > ln 10
    ce = F.cross_entropy(logits, torch.full((4,), 3))
    assert float(ce) > math.log(10)
    (-ce.clamp(max=math.log(10))).backward()
    assert logits.grad.abs().sum() == 0


def test_logit_mask_keeps_hidden_states():
    model = tiny_model()
    lm = LogitMask(model, [1]).eval()
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad(), Taps(lm, ["L4"], detach=True) as a:
        out = lm(x)
    with torch.no_grad(), Taps(model, ["L4"], detach=True) as b:
        ref = model(x)
    assert torch.equal(a["L4"], b["L4"])
    assert torch.isinf(out[:, 1]).all() and torch.equal(out[:, [0, 2]], ref[:, [0, 2]])


def test_config_roundtrip_and_unknown_key():
    cfg = RunConfig().replace(synth={"alpha": 2.0}, seed=3, data={"forget": (2, 5)})
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.data.forget == (2, 5)
    with pytest.raises(UserError, match="unknown key"):
        RunConfig.from_dict({"synth": {"alpah": 1}})


def test_ops_dispatch_reference_by_default():
    x = torch.randn(5, 6)
    s, c = ops.class_sums(x, torch.tensor([0, 1, 1, 0, 2]), 3)
    torch.testing.assert_close(s[1], x[1] + x[2])


@pytest.mark.gpu
def test_fit_trains_convolutions_channels_last_on_cuda():
    """train.fit puts a CNN's 4-d weights in channels_last on CUDA (README: "channels_last on CUDA") and
    trains it; on CPU it leaves the layout alone."""
    from cnr_fast.models import build_model
    from cnr_fast.train import fit

    for device in ("cpu", "cuda"):
        model = build_model("resnet18", 10, 1, 28, 0.125).to(device)
        x, y = torch.randn(16, 1, 28, 28, device=device), torch.randint(0, 10, (16,), device=device)
        fit(model, 1, lambda e: [(x, y)], lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), lr=1e-3,
            weight_decay=0.0, device=torch.device(device), quiet=True)
        w = model.layer1[0].conv1.weight  # (8, 8, 3, 3): the two layouts differ
        assert w.is_contiguous(memory_format=torch.channels_last) == (device == "cuda")

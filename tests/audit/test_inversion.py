"""Model-inversion attack (cnr_fast/audit/inversion.py): invert's contract, the attack's central
behaviour (a model that knows the forget class gives inversions an independent judge recognises; a model
retrained without it does not), the judge's independence and a constant-judge control."""

import numpy as np
import pytest
import torch
from torch import nn

from cnr_fast.audit.inversion import check_judge, fit_prior, inversion_attack, invert, train_judge
from cnr_fast.data import Split
from cnr_fast.models import LogitMask, build_model

S = 16  # digits resized to 16 px: the central test trains three models and a judge in ~6 s


def _tiny(seed=0, size=S):
    torch.manual_seed(seed)
    return build_model("resnet18", 10, 1, size, 0.0625).eval()


def _target_logprob(model, x, c):
    with torch.no_grad():
        return torch.log_softmax(model(x), 1)[:, c]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from cnr_fast.data import _resize_uint8, stratified_split

    d = load_digits()
    x = torch.as_tensor(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).reshape(-1, 1, 8, 8)
    x = _resize_uint8(x, S)
    y = torch.as_tensor(d.target, dtype=torch.long)
    tr, te = stratified_split(d.target, 0.25, 0)
    return Split(x[tr], y[tr]), Split(x[te], y[te])


FORGET = [3, 5]


@pytest.fixture(scope="module")
def models(digits):
    """(knows, never): one trained on every class, one retrained without FORGET (their logits never
    trained to fire), both resnet18 width 0.0625 at 16 px, 4 epochs (~2 s each)."""
    from cnr_fast.config import TrainConfig
    from cnr_fast.train import train_classifier

    train, _ = digits
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3, weight_decay=0.0)
    knows = _tiny(0)
    train_classifier(knows, train, cfg, device="cpu", seed=0, quiet=True)
    never = _tiny(100)
    train_classifier(never, train.subset(~torch.isin(train.y, torch.tensor(FORGET))), cfg, device="cpu", seed=100,
                     quiet=True)
    return knows.eval(), never.eval()


@pytest.mark.parametrize("use_prior", [False, True])
def test_invert_raises_target_and_leaves_model_and_rng_alone(use_prior, models, digits):
    import copy

    m = copy.deepcopy(models[0])
    m.train()
    m.layer1.eval()  # a submodule in another mode than its parent: restored as it was, not as the parent's
    m.conv1.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    modes = {n: mod.training for n, mod in m.named_modules()}
    before = _state(m)
    prior = None
    if use_prior:
        prior = fit_prior(digits[0], exclude=[3], k=16)
        assert prior.classes == (0, 1, 2, 4, 5, 6, 7, 8, 9) and prior.basis.shape == (16, S * S)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    x, x0 = invert(m, 3, shape=(1, S, S), n=4, steps=60, prior=prior, seed=0, return_start=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert x.shape == (4, 1, S, S) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and torch.isfinite(x).all()
    # the caller's mode, flags, parameters and buffers, untouched; no gradient written
    assert {n: mod.training for n, mod in m.named_modules()} == modes
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in m.parameters())
    m.eval()
    lp0, lp = _target_logprob(m, x0, 3), _target_logprob(m, x, 3)
    assert float(lp.mean()) > float(lp0.mean()) + 1.0  # the target log-probability rose well above the noise's
    assert float(lp.exp().mean()) > 0.5 > float(lp0.exp().mean())
    # seeded: the same call gives the same images
    m.train()
    assert torch.equal(invert(m, 3, shape=(1, S, S), n=4, steps=60, prior=prior, seed=0), x)


def test_invert_units_and_logit_mask():
    m = _tiny()
    units = {"L4": torch.arange(0, 32 * 2 * 2, 7)}  # flat indices into the (32, 2, 2) L4 map

    def unit_mean(x):
        from cnr_fast.models import Taps

        with torch.no_grad(), Taps(m, ["L4"]) as t:
            m(x)
        return float(t["L4"].reshape(len(x), -1)[:, units["L4"]].mean())

    plain = invert(m, 1, shape=(1, S, S), n=4, steps=40)
    driven = invert(m, 1, shape=(1, S, S), n=4, steps=40, units=units, unit_weight=5.0)
    assert unit_mean(driven) > unit_mean(plain)
    masked = LogitMask(m, [1])  # -inf forget logit: finite gradients, finite images, zero confidence
    x = invert(masked, 1, shape=(1, S, S), n=2, steps=10)
    assert torch.isfinite(x).all()


def test_judge_recognises_inversions_of_a_model_that_knows_the_class(digits, models):
    from cnr_fast.train import forget_retain_accuracy

    train, test = digits
    forget = FORGET
    knows, never = models
    assert forget_retain_accuracy(knows, test, forget, device="cpu")["forget_acc"] > 0.8
    assert forget_retain_accuracy(never, test, forget, device="cpu")["forget_acc"] == 0.0
    judge = train_judge(train, 10, seed=2, test=test)  # independent: its own architecture, seed, training
    assert judge.judge_info["test_acc"] > 0.85
    prior = fit_prior(train, exclude=forget)  # population prior from retain-class images only
    r_knows = inversion_attack(knows, judge, forget, shape=(1, S, S), prior=prior, seed=0)
    r_never = inversion_attack(never, judge, forget, shape=(1, S, S), prior=prior, seed=0)
    print(f"\njudge test acc {judge.judge_info['test_acc']:.3f}; judge_forget_rate: knows the class "
          f"{r_knows['judge_forget_rate']:.3f} {[v['judge_forget_rate'] for v in r_knows['per_class'].values()]}, "
          f"retrained without it {r_never['judge_forget_rate']:.3f} "
          f"{[v['judge_forget_rate'] for v in r_never['per_class'].values()]}; noise floor "
          f"{r_knows['judge_noise_rate']:.3f}; audited confidence {r_knows['audited_confidence']:.2f} / "
          f"{r_never['audited_confidence']:.2f}")
    assert r_knows["judge_forget_rate"] >= 0.5
    assert r_never["judge_forget_rate"] <= 0.25
    assert r_knows["judge_forget_rate"] - r_never["judge_forget_rate"] >= 0.4
    assert r_knows["audited_confidence"] > 0.5 > r_never["audited_confidence"]
    assert set(r_knows["per_class"]) == {"3", "5"} and r_knows["_inversions"]["3"].shape == (16, 1, S, S)
    assert r_knows["judge"]["arch"] == "JudgeCNN" and r_knows["settings"]["parameterisation"] == "prior"
    with pytest.raises(ValueError, match="prior"):  # a prior that saw the forget class is refused
        inversion_attack(knows, judge, forget, shape=(1, S, S), prior=fit_prior(train, exclude=[3]), steps=1)


def test_judge_must_be_independent():
    m = _tiny()
    with pytest.raises(ValueError, match="audited model itself"):
        inversion_attack(m, m, [3], shape=(1, S, S), steps=1)
    with pytest.raises(ValueError, match="shares parameters"):
        inversion_attack(m, LogitMask(m, [3]), [3], shape=(1, S, S), steps=1)
    check_judge(m, _tiny(1))  # a separately built model passes


class _ConstJudge(nn.Module):
    """Always says class k."""

    def __init__(self, k, num_classes=10):
        super().__init__()
        self.k, self.num_classes = k, num_classes

    def forward(self, x):
        out = torch.zeros(len(x), self.num_classes)
        out[:, self.k] = 10.0
        return out


def test_constant_judge_control():
    m = _tiny()
    r = inversion_attack(m, _ConstJudge(4), [4, 7], shape=(1, S, S), n=4, steps=5)
    assert r["per_class"]["4"]["judge_forget_rate"] == 1.0
    assert r["per_class"]["7"]["judge_forget_rate"] == 0.0
    assert r["judge_forget_rate"] == 0.5
    assert r["per_class"]["4"]["judge_pred_hist"] == [0, 0, 0, 0, 4, 0, 0, 0, 0, 0]
    assert r["per_class"]["4"]["judge_noise_rate"] == 1.0 and r["per_class"]["7"]["judge_noise_rate"] == 0.0
    assert inversion_attack(m, _ConstJudge(2), [4], shape=(1, S, S), n=4, steps=5)["judge_forget_rate"] == 0.0


def test_train_judge_needs_every_class():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (20, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(20) % 9)
    with pytest.raises(ValueError, match=r"lacks class\(es\) \[9\]"):
        train_judge(split, 10)

"""Every unlearning method forgets on a small real configuration: forget accuracy drops by at least
0.5 below the original's while retain accuracy drops by at most 0.05 (test split).

Budgets are cut so the suite stays in minutes; the recipes are the methods' own (`baselines/*.py`,
`cnr/`). The baselines run on sklearn digits (16 px); CNR needs a DCGAN that can draw the forget
class, so it runs on mnist5k with a 3-epoch original.
"""

import contextlib

import pytest
import torch

from cnr_fast import experiments as E
from cnr_fast.config import RunConfig
from cnr_fast.data import load_dataset
from cnr_fast.train import forget_retain_accuracy

FORGET = [2]


@contextlib.contextmanager
def threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    cfg = RunConfig().replace(data={"dataset": "digits", "image_size": 16}, train={"epochs": 8, "lr": 3e-3},
                              synth={"batch": 32}, reset={"epochs": 3, "stabilize_epochs": 1},
                              baseline={"epochs": 3, "stabilize_epochs": 1})
    ds = load_dataset(cfg.data)
    with threads(1):
        original, _ = E.train_reference("original", cfg, ds, "cpu", quiet=True)
    return cfg, ds, original


def _check_forgets(method, cfg, ds, original):
    with threads(1):
        a0 = forget_retain_accuracy(original, ds.test, FORGET, device="cpu")
        assert a0["forget_acc"] >= 0.9, a0  # an original that knows the class
        model, info, _, _ = E.unlearn_model(method, original, ds, cfg.replace(method=method), device="cpu", quiet=True)
        a = forget_retain_accuracy(model, ds.test, FORGET, device="cpu")
    assert a0["forget_acc"] - a["forget_acc"] >= 0.5, (method, a0, a)
    assert a0["retain_acc"] - a["retain_acc"] <= 0.05, (method, a0, a)
    return info


SSD_CPU = pytest.mark.xfail(
    strict=False,
    reason="SSD (alpha 10, its authors' ResNet-18 default) depends on the CPU's float results here: on the "
           "Intel AMX and AVX-512 machines it forgot (>= 0.5 drop); on an AVX2-only AMD EPYC the same seed trains "
           "an original where the 151 layer-4 weights SSD's rule selects change no prediction (forget prob "
           "0.9707 -> 0.9708). The rule itself is checked exactly in tests/test_fair.py.")


@pytest.mark.parametrize("method", ["rl", pytest.param("ssd", marks=SSD_CPU), "salun", "gau", "kdu"])
def test_baseline_forgets_on_digits(digits, method):
    cfg, ds, original = digits
    info = _check_forgets(method, cfg, ds, original)
    if method == "salun":
        assert info["chosen_on_validation"].startswith("lr=")


@pytest.mark.xfail(strict=True, reason="SCRUB with either of its authors' settings (3 or 10 epochs, lr 5e-4) "
                   "moves little on a 1,300-image set: forget acc 0.89 measured; strict, so it fails loudly "
                   "if SCRUB starts forgetting here")
def test_scrub_forgets_on_digits(digits):
    cfg, ds, original = digits
    _check_forgets("scrub", cfg, ds, original)


def test_cnr_forgets_on_mnist5k():
    cfg = RunConfig().replace(train={"epochs": 3}, synth={"gan_epochs": 15, "steps": 100},
                              reset={"epochs": 6, "stabilize_epochs": 1})
    ds = load_dataset(cfg.data)
    with threads(1):
        original, _ = E.train_reference("original", cfg, ds, "cpu", quiet=True)
    info = _check_forgets("cnr", cfg, ds, original)
    hist = info["synthesize"]["2"]["model_pred_hist"]
    assert hist[2] == max(hist)  # the synthetic images drive the forget class ("excite" sign)

"""Every unlearning method forgets on a small real configuration: forget accuracy drops by at least
0.5 below the original's while retain accuracy drops by at most 0.05 (test split).

Budgets are cut so the suite stays in minutes; the recipes are the methods' own (`baselines/*.py`,
`cnr/`). Here the methods that run on sklearn digits (16 px); SCRUB, SSD and CNR run on mnist5k in
tests/test_forgetting_mnist5k.py (a file of its own so that the two test workers share the load).
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


@pytest.mark.parametrize("method", ["rl", "cnr-real", "salun", "gau", "kdu"])
def test_baseline_forgets_on_digits(digits, method):
    cfg, ds, original = digits
    info = _check_forgets(method, cfg, ds, original)
    # each of these chooses its step size on validation and says so
    assert E.validation_choice(info)["chosen"].startswith("lr=")


def test_neggrad_plus_forgets_on_digits_at_the_authors_setting(digits):
    """NegGrad+ at RUM's setting (SGD 0.01, momentum 0.9, weight decay 5e-4, 5 epochs, batch 256), alpha
    chosen on validation from its grid."""
    cfg, ds, original = digits
    info = _check_forgets("neggrad+", cfg, ds, original)
    assert E.validation_choice(info)["chosen"].startswith("alpha=") and info["epochs"] == 5 and info["lr"] == 0.01

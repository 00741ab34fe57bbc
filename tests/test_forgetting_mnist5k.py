"""SCRUB, SSD and CNR forget on mnist5k (a 3-epoch original, one thread): forget accuracy drops by at
least 0.5 below the original's while retain accuracy drops by at most 0.05 (test split). SCRUB and SSD
at their faithful settings (scrub.py, ssd.py); CNR needs a DCGAN that can draw the forget class.
"""

import pytest

from cnr_fast import experiments as E
from cnr_fast.config import RunConfig
from cnr_fast.data import load_dataset

from test_forgetting import _check_forgets, threads  # tests/ is on sys.path (pytest rootdir import)


@pytest.fixture(scope="module")
def mnist5k():
    """A 3-epoch mnist5k original (1 thread): the scale SCRUB's small setting and SSD are run at."""
    cfg = RunConfig().replace(train={"epochs": 3})
    ds = load_dataset(cfg.data)
    with threads(1):
        original, _ = E.train_reference("original", cfg, ds, "cpu", quiet=True)
    return cfg, ds, original


def test_scrub_forgets_at_its_small_scale_setting(mnist5k):
    """SCRUB's small-scale notebook setting (its own loaders, forget 64 / retain 32), as its authors
    name it for small data sets, on mnist5k."""
    cfg, ds, original = mnist5k
    info = _check_forgets("scrub", cfg.replace(baseline={"scrub_preset": "small"}), ds, original)
    assert info["settings"]["forget_batch"] == 64 and info["settings"]["retain_batch"] == 32


def test_ssd_forgets_with_alpha_chosen_on_validation(mnist5k):
    """SSD with the authors' batching and alpha chosen on validation from a grid holding their 10."""
    cfg, ds, original = mnist5k
    info = _check_forgets("ssd", cfg, ds, original)
    assert set(info["validation"]) == {"alpha=2.5", "alpha=5", "alpha=7.5", "alpha=10"}
    assert info["dampened_params"] > 0
    assert all("dampened_params" in v for v in info["validation"].values())


def test_cnr_forgets_on_mnist5k(mnist5k):
    cfg, ds, original = mnist5k
    cfg = cfg.replace(synth={"gan_epochs": 15, "steps": 100}, reset={"epochs": 6, "stabilize_epochs": 1, "lr": 1e-4})
    info = _check_forgets("cnr", cfg, ds, original)
    hist = info["synthesize"]["2"]["model_pred_hist"]
    assert hist[2] == max(hist)  # the synthetic images drive the forget class ("excite" sign)

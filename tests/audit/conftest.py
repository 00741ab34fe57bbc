import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every audit test at one torch thread (tests/conftest.py's one_thread): on this shared 2-core machine
    two OpenMP threads competing with other jobs ran these small ops ~6x slower than one."""
    yield


@pytest.fixture
def blobs():
    """4 Gaussian classes in 20-d, train 240 / test 120, class 2 the forget class."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2.0, (4, 20))

    def draw(n):
        y = np.repeat(np.arange(4), n // 4)
        x = centers[y] + rng.normal(0, 1.5, (len(y), 20))
        return x.astype(np.float32), y

    xtr, ytr = draw(240)
    xte, yte = draw(120)
    return xtr, ytr, xte, yte


def make_tiny_resnet(num_classes=10, seed=0):
    from cnr_fast.models import build_model

    torch.manual_seed(seed)
    return build_model("resnet18", num_classes, 1, 28, 0.0625).eval()


@pytest.fixture
def tiny_resnet():
    """Factory of a randomly initialised resnet18 at width 0.0625 (4-8-16-32 channels), 1x28x28 input."""
    return make_tiny_resnet

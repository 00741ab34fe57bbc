"""Test-session hooks shared by every test directory.

TRITON_INTERPRET must be in the environment before triton is first imported, and torchvision
imports triton: so it is set here, in the root conftest, before any test module imports
cnr_fast.models. The dispatch never picks the interpreter automatically (only with
CNR_FAST_BACKEND=triton), so other tests keep the torch reference on CPU.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after (small models on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Test-session hooks shared by every test directory.

TRITON_INTERPRET must be in the environment before triton is first imported, and torchvision
imports triton: so it is set here, in the root conftest, before any test module imports
cnr_fast.models. The dispatch never picks the interpreter automatically (only with
CNR_FAST_BACKEND=triton), so other tests keep the torch backend on CPU.
"""

import os

# Under pytest-xdist (the README's `-n 2`) each worker gets one thread, and so does every CLI it starts
# (the variables are inherited): two workers with torch's default two threads each would make OpenMP's
# spinning threads wait on threads the OS has descheduled, which slowed small tests up to 100x when the
# cores were shared. Set before torch is imported: OpenMP reads them when it starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

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


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A model cache shared by the tests of one module (originals and references trained once)."""
    return str(tmp_path_factory.mktemp("cache"))

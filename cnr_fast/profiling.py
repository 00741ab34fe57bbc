"""NVTX ranges named `cnr/<stage>/<op>`; no-ops without CUDA (and without the nvtx package)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def nvtx_range(name: str):
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()
    else:
        yield

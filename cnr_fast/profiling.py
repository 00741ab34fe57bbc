"""NVTX ranges named `cnr/<stage>/<op>` through torch.cuda.nvtx (no extra package); no-ops without CUDA."""

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

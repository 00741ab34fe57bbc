"""Triton `selectivity_topk`: retain centroid and S = means[forget] - centroid in one kernel, then TopK.

Spec: `spec.selectivity_topk`. One program per block of units reads the R retain rows once
(sum in fp32, divided by R: the unweighted mean of eq. 2, same order of operations as torch's
`mean`), then writes S and -S for every forget row (eq. 3). Writing -S here saves the negation
launch the spec does before its second TopK, and keeps its exact semantics (NaNs rank first
in both TopKs, as in `topk(-s)`).

The TopK itself is torch.topk on the kernel's output: a per-row selection of k out of U is what
torch.topk is built for (radix select), it runs once per forget class set, not per step, and a fused
in-kernel selection would have to either bound k or sort U per row. Index results equal the
spec's wherever S has no ties.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import spec
from . import cdiv, device_ctx, interp_safe, interpret


@triton.jit
def _selectivity_kernel(
    m_ptr, forget_ptr, retain_ptr, s_ptr, neg_ptr,
    U, F, R, sm0, sm1,
    BLOCK_U: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    u = pid * BLOCK_U + tl.arange(0, BLOCK_U)
    ok = u < U
    u_off = u.to(tl.int64) * sm1
    cen = tl.zeros((BLOCK_U,), dtype=tl.float32)
    for r in range(R):
        row = tl.load(retain_ptr + r).to(tl.int64)
        cen += tl.load(m_ptr + row * sm0 + u_off, mask=ok, other=0.0).to(tl.float32)
    cen = cen / R
    s_out = s_ptr + u  # row f of S starts f * U further on: advance the pointers (64-bit) per row
    n_out = neg_ptr + u
    for f in range(F):
        row = tl.load(forget_ptr + f).to(tl.int64)
        s = tl.load(m_ptr + row * sm0 + u_off, mask=ok, other=0.0).to(tl.float32) - cen
        tl.store(s_out, s, mask=ok)
        tl.store(n_out, -s, mask=ok)
        s_out += U
        n_out += U


def _as_rows(idx, C: int, name: str, device) -> torch.Tensor:
    """List/tensor of class indices -> int64 tensor on device, negatives wrapped like torch indexing."""
    t = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
    bad = (t < -C) | (t >= C)
    if bool(bad.any()):
        raise IndexError(f"selectivity_topk: {name} index {int(t[bad][0])} is out of range for {C} classes")
    t = torch.where(t < 0, t + C, t)
    return t.to(device)


def selectivity_topk(
    means: torch.Tensor, forget: list[int], retain: list[int], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as `spec.selectivity_topk`: S (F, U) fp32, f_idx (F, k), r_idx (F, k)."""
    if (
        means.dim() != 2
        or len(forget) == 0
        or len(retain) == 0  # the spec's centroid is then NaN (mean of nothing): let it say so
        or means.shape[1] == 0
    ):
        return spec.selectivity_topk(means, forget, retain, k)
    m = interp_safe(means)
    C, U = m.shape
    f_rows = _as_rows(forget, C, "forget", m.device)
    r_rows = _as_rows(retain, C, "retain", m.device)
    F, R = f_rows.numel(), r_rows.numel()
    s = torch.empty((F, U), dtype=torch.float32, device=m.device)
    neg = torch.empty_like(s)
    BLOCK_U = 1024 if interpret() else 256
    with device_ctx(m):
        _selectivity_kernel[(cdiv(U, BLOCK_U),)](
            m, f_rows, r_rows, s, neg, U, F, R, m.stride(0), m.stride(1), BLOCK_U=BLOCK_U
        )
    # TopK by torch.topk on the kernel output (see the module docstring for why it is not fused).
    f_idx = torch.topk(s, k, dim=1).indices
    r_idx = torch.topk(neg, k, dim=1).indices
    return s, f_idx, r_idx

"""Triton `class_sums`: per-class sums (C, U) fp32 and counts (C,) int64 in one pass over feats.

Spec: `reference.class_sums`. Each program owns a (BLOCK_C classes x BLOCK_U units) fp32 tile and
streams its rows of feats once: per chunk of BLOCK_N rows it builds the one-hot (BLOCK_C, BLOCK_N)
matrix of the labels and adds onehot @ x to the tile with `tl.dot` (tensor cores for 16-bit feats).
A one-hot times x product is exact, so all rounding comes from the fp32 accumulation, as in the
reference's fp32 `index_add_`. More than BLOCK_C_MAX classes re-read feats once per class block.
When the (units x class-block) grid alone would leave SMs idle, the rows are split across programs
that `atomic_add` their tiles (fp32 addition order then varies run to run, as `index_add_` on CUDA).

Differences from the reference, on invalid input only: labels outside [0, num_classes) are dropped
(neither summed nor counted) where the reference raises (CPU) or asserts (CUDA); checking would cost
a device sync per batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import reference
from . import cdiv, device_ctx, interp_safe, interpret, max_programs, next_pow2, view4d

BLOCK_C_MAX = 128

# FP32_MODE values (how fp32 feats enter tl.dot)
_NATIVE = 0  # 16-bit feats: one-hot in the same dtype, fp32 accumulation
_IEEE = 1  # fp32 dot as is (the interpreter computes it in numpy fp32)
_SPLIT3 = 2  # x = x1 + x2 + x3 exactly with x_i in SPLIT_DT (bf16: 3 x 8 bits >= fp32's 24), 3 exact dots


@triton.jit
def _class_sums_kernel(
    x_ptr, lab_ptr, sums_ptr, counts_ptr,
    N, U, C, D2, D3,
    sx0, sx1, sx2, sx3,
    rows_per_split,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_U: tl.constexpr,
    FP32_MODE: tl.constexpr, SPLIT_DT: tl.constexpr, ATOMIC: tl.constexpr,
):  # fmt: skip
    pid_u = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    u = pid_u * BLOCK_U + tl.arange(0, BLOCK_U)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    u_ok = u < U
    # unit u of the flattened row -> strided offset in the (N, D1, D2, D3) view (see view4d)
    u_off = (u // (D2 * D3)).to(tl.int64) * sx1 + ((u // D3) % D2).to(tl.int64) * sx2 + (u % D3).to(tl.int64) * sx3

    acc = tl.zeros((BLOCK_C, BLOCK_U), dtype=tl.float32)
    cnt = tl.zeros((BLOCK_C,), dtype=tl.int64)
    n_start = pid_s * rows_per_split
    n_end = tl.minimum(N, n_start + rows_per_split)
    for n0 in range(n_start, n_end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < n_end
        lab = tl.load(lab_ptr + n, mask=n_ok, other=-1)  # -1 matches no class
        hit = lab[None, :] == c[:, None]  # (BLOCK_C, BLOCK_N)
        cnt += tl.sum(hit.to(tl.int64), axis=1)
        x = tl.load(
            x_ptr + n.to(tl.int64)[:, None] * sx0 + u_off[None, :], mask=n_ok[:, None] & u_ok[None, :], other=0.0
        )
        if FP32_MODE == 0:
            acc = tl.dot(hit.to(x.dtype), x, acc=acc)
        elif FP32_MODE == 1:
            acc = tl.dot(hit.to(tl.float32), x.to(tl.float32), acc=acc, input_precision="ieee")
        else:
            # Exact 3-way split: each residual is exact in fp32 and each part has SPLIT_DT's mantissa,
            # so x1 + x2 + x3 == x and the three one-hot dots on tensor cores lose nothing.
            xf = x.to(tl.float32)
            x1 = xf.to(SPLIT_DT)
            r1 = xf - x1.to(tl.float32)
            x2 = r1.to(SPLIT_DT)
            x3 = (r1 - x2.to(tl.float32)).to(SPLIT_DT)
            oh = hit.to(SPLIT_DT)
            acc = tl.dot(oh, x1, acc=acc)
            acc = tl.dot(oh, x2, acc=acc)
            acc = tl.dot(oh, x3, acc=acc)

    c_ok = c < C
    out = sums_ptr + c.to(tl.int64)[:, None] * U + u[None, :]
    m = c_ok[:, None] & u_ok[None, :]
    cm = c_ok & (pid_u == 0)  # one unit block counts the labels
    if ATOMIC:
        tl.atomic_add(out, acc, mask=m)
        tl.atomic_add(counts_ptr + c, cnt, mask=cm)
    else:
        tl.store(out, acc, mask=m)
        tl.store(counts_ptr + c, cnt, mask=cm)


def class_sums(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *, _split: int | None = None,
    _fp32_mode: int | None = None, _split_dtype=None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Same contract as `reference.class_sums`. Feats of any layout are read through their strides
    (a channels_last (N, C, H, W) tap map needs no flattening copy). `_split`, `_fp32_mode`,
    `_split_dtype` are test hooks (row split count, fp32 dot mode, split dtype)."""
    num_classes = int(num_classes)
    if feats.dim() < 1 or feats.shape[0] == 0 or feats[0].numel() == 0 or num_classes <= 0:
        return reference.class_sums(feats, labels, num_classes)  # degenerate shapes: the spec's own answer
    x, sizes, strides = view4d(interp_safe(feats))
    N = sizes[0]
    U = sizes[1] * sizes[2] * sizes[3]
    labels = labels.reshape(-1)
    if labels.shape[0] != N:
        raise ValueError(f"class_sums: {N} feature rows but {labels.shape[0]} labels")
    labels = labels.contiguous()
    C = num_classes

    if x.dtype == torch.float32:
        fp32_mode = _IEEE if interpret() else _SPLIT3
    else:
        fp32_mode = _NATIVE
    if _fp32_mode is not None and x.dtype == torch.float32:
        fp32_mode = _fp32_mode
    split_dt = _split_dtype if _split_dtype is not None else tl.bfloat16

    BLOCK_C = min(max(next_pow2(C), 16), BLOCK_C_MAX)
    BLOCK_U = 64
    BLOCK_N = 32 if fp32_mode == _SPLIT3 else 64
    grid_u, grid_c = cdiv(U, BLOCK_U), cdiv(C, BLOCK_C)
    if _split is not None:
        split = max(1, int(_split))
    elif interpret():
        split = 1
    else:  # enough programs to fill the GPU, at least a few row chunks each
        want = cdiv(max_programs(x.device, per_sm=2), grid_u * grid_c)
        split = max(1, min(want, cdiv(N, 4 * BLOCK_N)))
    rows = cdiv(cdiv(N, split), BLOCK_N) * BLOCK_N
    split = cdiv(N, rows)
    atomic = split > 1
    alloc = torch.zeros if atomic else torch.empty
    sums = alloc((C, U), dtype=torch.float32, device=x.device)
    counts = alloc((C,), dtype=torch.int64, device=x.device)
    with device_ctx(x):
        _class_sums_kernel[(grid_u, grid_c, split)](
            x, labels, sums, counts,
            N, U, C, sizes[2], sizes[3],
            strides[0], strides[1], strides[2], strides[3],
            rows,
            BLOCK_C=BLOCK_C, BLOCK_N=BLOCK_N, BLOCK_U=BLOCK_U,
            FP32_MODE=fp32_mode, SPLIT_DT=split_dt, ATOMIC=atomic,
            num_warps=8 if BLOCK_C > 64 else 4,
        )  # fmt: skip
    return sums, counts

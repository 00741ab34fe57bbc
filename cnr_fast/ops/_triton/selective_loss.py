"""Triton `selective_loss` (eq. 6), forward and backward over all taps.

Spec: `spec.selective_loss`. The loss is linear in the features:
    loss = sum_l sum_b [ cf_l * sum_{k} x_l[b, fi_l[k]] + cr_l * sum_{k} x_l[b, ri_l[k]] ],
    cf_l = 1 / (L * B_l * Kf_l),  cr_l = -alpha / (L * B_l * Kr_l),
so its gradient does not depend on x: d loss / d x_l[b, u] = cf_l * #{k: fi_l[k] = u} + cr_l * #{k: ri_l[k] = u}
(the same for every b; duplicates in an index set count twice, as in the spec's gather).

Forward: one launch per tap over (index blocks of fi then ri) x (row splits of the samples); each
program turns its BLOCK_K indices into element offsets once, then gathers BLOCK_B rows a step (one
address add, load, convert and add per element) and writes one pre-scaled partial into a shared
buffer; one torch sum of all partials (L + 1 launches, deterministic). Nothing of x is saved for backward.
Backward: one launch per tap; each program counts the index hits of its block of units once, then
writes that gradient row to its block of samples (no zero-fill, no atomics, x's dtype and layout).

Taps of any layout (e.g. channels_last (B, C, H, W)) are read through their strides: unit u is the
row-major flat index the spec's `reshape(B, -1)` gives it. Negative indices wrap as in torch
indexing; indices outside [-U, U) are ignored where the spec raises (checking would sync).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .. import spec
from . import cdiv, device_ctx, interp_safe, interpret, max_programs, view4d


@triton.jit
def _gather_sum(x_ptr, idx_ptr, pid_k, pid_b, B, K, U, D2, D3, s0, s1, s2, s3, rows,
                BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """sum of x[b, idx[k]] over this program's BLOCK_K indices k and its rows b (fp32 scalar).

    The index block is loaded and turned into element offsets once (invalid or padding indices read
    x[b, 0] and are dropped once at the end); the row loop then moves BLOCK_B rows a step with one
    pointer add per element: no division, no index load, no predicate in the loop."""
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = k < K
    u = tl.load(idx_ptr + k, mask=ok, other=0)
    u = tl.where(u < 0, u + U, u)  # torch-style negative indices
    ok = ok & (u >= 0) & (u < U)
    off = (
        (u // (D2 * D3)).to(tl.int64) * s1
        + ((u // D3) % D2).to(tl.int64) * s2
        + (u % D3).to(tl.int64) * s3
    )
    off = tl.where(ok, off, 0)
    bb = tl.arange(0, BLOCK_B)
    b_start = pid_b * rows
    n_rows = tl.minimum(B, b_start + rows) - b_start
    ptr = x_ptr + (b_start + bb).to(tl.int64)[:, None] * s0 + off[None, :]
    step = s0 * BLOCK_B
    n_full = n_rows // BLOCK_B
    part = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
    roff = s0 * 0  # a scalar row offset: one add per element for the address
    for _ in range(n_full):
        part += tl.load(ptr + roff).to(tl.float32)
        roff += step
    rem = n_rows - n_full * BLOCK_B  # the last rows, masked
    part += tl.load(ptr + n_full.to(tl.int64) * step, mask=(bb < rem)[:, None], other=0.0).to(tl.float32)
    return tl.sum(tl.where(ok, tl.sum(part, axis=0), 0.0), axis=0)


@triton.jit
def _sel_fwd_kernel(
    x_ptr, fi_ptr, ri_ptr, part_ptr,
    B, U, KF, KR, D2, D3, s0, s1, s2, s3,
    coef_f, coef_r, rows, nkf,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Program (pid_k, pid_b): index block pid_k of fi (pid_k < nkf) or block pid_k - nkf of ri, over
    the samples [pid_b * rows, ...); one pre-scaled partial each."""
    pid_k = tl.program_id(0)
    pid_b = tl.program_id(1)
    if pid_k < nkf:
        part = _gather_sum(x_ptr, fi_ptr, pid_k, pid_b, B, KF, U, D2, D3, s0, s1, s2, s3, rows, BLOCK_B, BLOCK_K)
        part = part * coef_f
    else:
        part = _gather_sum(
            x_ptr, ri_ptr, pid_k - nkf, pid_b, B, KR, U, D2, D3, s0, s1, s2, s3, rows, BLOCK_B, BLOCK_K
        )
        part = part * coef_r
    tl.store(part_ptr + pid_b * tl.num_programs(0) + pid_k, part)


@triton.jit
def _count_hits(idx_ptr, K, u, U, BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr):
    w = tl.zeros((BLOCK_U,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        km = k < K
        idx = tl.load(idx_ptr + k, mask=km, other=0)
        idx = tl.where(idx < 0, idx + U, idx)
        idx = tl.where(km, idx, -1)  # padding matches no unit
        w += tl.sum((idx[:, None] == u[None, :]).to(tl.float32), axis=0)
    return w


@triton.jit
def _sel_bwd_kernel(
    g_ptr, go_ptr, fi_ptr, ri_ptr,
    B, U, KF, KR, D2, D3, g0, g1, g2, g3,
    coef_f, coef_r, rows_per_prog,
    BLOCK_U: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_u = tl.program_id(0)
    pid_b = tl.program_id(1)
    u = pid_u * BLOCK_U + tl.arange(0, BLOCK_U)
    ok = u < U
    w = _count_hits(fi_ptr, KF, u, U, BLOCK_U, BLOCK_K) * coef_f
    w += _count_hits(ri_ptr, KR, u, U, BLOCK_U, BLOCK_K) * coef_r
    w = w * tl.load(go_ptr).to(tl.float32)
    wv = w.to(g_ptr.dtype.element_ty)
    u_off = (u // (D2 * D3)).to(tl.int64) * g1 + ((u // D3) % D2).to(tl.int64) * g2 + (u % D3).to(tl.int64) * g3
    b_start = pid_b * rows_per_prog
    b_end = tl.minimum(B, b_start + rows_per_prog)
    row = g_ptr + b_start.to(tl.int64) * g0 + u_off
    for _ in range(b_start, b_end):
        tl.store(row, wv, mask=ok)
        row += g0


def fwd_config(B: int, kf: int, kr: int, programs: int) -> dict:
    """One tap's forward launch: a (BLOCK_B rows x BLOCK_K indices) tile of TILE elements (8 a thread
    at 4 warps; the interpreter: smaller), BLOCK_K the widest power of two that pads the index sets by
    at most 1/8; the samples split only as far as needed for `programs` programs."""
    tile = 256 if interpret() else 1024
    bk = 8
    for c in (1024, 512, 256, 128, 64, 32, 16, 8):
        padded = cdiv(kf, c) * c + cdiv(kr, c) * c
        if c <= tile and (padded - kf - kr) * 8 <= padded:
            bk = c
            break
    bb = max(1, tile // bk)
    nkf = cdiv(kf, bk)
    gk = nkf + cdiv(kr, bk)
    split = min(B, 2) if interpret() else max(1, min(cdiv(programs, gk), cdiv(B, 2 * bb)))
    rows = cdiv(B, split)
    return {"BLOCK_B": bb, "BLOCK_K": bk, "grid": (gk, cdiv(B, rows)), "rows": rows, "nkf": nkf}


def _index(ix, device) -> torch.Tensor:
    t = torch.as_tensor(ix, device=device)
    if t.dtype not in (torch.int32, torch.int64):
        t = t.long()
    return t.reshape(-1).contiguous()


class SelectiveLoss(torch.autograd.Function):
    """forward(alpha, n_taps, *feats, *f_idx, *r_idx); gradient to the feats only."""

    @staticmethod
    def forward(ctx, alpha, n, *tensors):
        feats, f_idx, r_idx = tensors[:n], tensors[n : 2 * n], tensors[2 * n :]
        dev = feats[0].device
        views, coefs, grids = [], [], []
        for x, fi, ri in zip(feats, f_idx, r_idx):
            xv, sizes, strides = view4d(interp_safe(x))
            B = sizes[0]
            kf, kr = fi.numel(), ri.numel()
            coefs.append((1.0 / (n * B * kf), -float(alpha) / (n * B * kr)))
            views.append((xv, sizes, strides))
            grids.append(fwd_config(B, kf, kr, max_programs(dev, per_sm=4, interpreter_cap=4)))
        part = torch.empty(sum(c["grid"][0] * c["grid"][1] for c in grids), dtype=torch.float32, device=dev)
        off = 0
        with device_ctx(feats[0]):
            for (xv, sizes, strides), fi, ri, (cf, cr), c in zip(views, f_idx, r_idx, coefs, grids):
                U = sizes[1] * sizes[2] * sizes[3]
                _sel_fwd_kernel[c["grid"]](
                    xv, fi, ri, part[off:],
                    sizes[0], U, fi.numel(), ri.numel(), sizes[2], sizes[3], *strides,
                    cf, cr, c["rows"], c["nkf"], BLOCK_B=c["BLOCK_B"], BLOCK_K=c["BLOCK_K"], num_warps=4,
                )  # fmt: skip
                off += c["grid"][0] * c["grid"][1]
        ctx.save_for_backward(*f_idx, *r_idx)
        ctx.n = n
        ctx.coefs = coefs
        ctx.metas = [(x.shape, x.dtype, x.device) for x in feats]
        ctx.like = [torch.empty_like(x, device="meta") for x in feats]  # layout of each tap, no memory
        return part.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        n = ctx.n
        saved = ctx.saved_tensors
        f_idx, r_idx = saved[:n], saved[n:]
        grads = []
        for i in range(n):
            if not ctx.needs_input_grad[2 + i]:
                grads.append(None)
                continue
            shape, dtype, dev = ctx.metas[i]
            low_in_interp = interpret() and dtype == torch.bfloat16
            g = torch.empty_strided(
                shape, ctx.like[i].stride(), dtype=torch.float32 if low_in_interp else dtype, device=dev
            )
            gv, sizes, gstr = view4d(g)
            B = sizes[0]
            U = sizes[1] * sizes[2] * sizes[3]
            cf, cr = ctx.coefs[i]
            go = grad_out.reshape(1).to(device=dev, dtype=torch.float32)
            BLOCK_U = 128 if interpret() else 256
            grid_u = cdiv(U, BLOCK_U)
            # split the samples across programs only as far as needed to fill the GPU
            split = 1 if interpret() else max(1, min(B, cdiv(max_programs(dev, per_sm=4), grid_u)))
            rows = cdiv(B, split)
            split = cdiv(B, rows)
            with device_ctx(g):
                _sel_bwd_kernel[(grid_u, split)](
                    gv, go, f_idx[i], r_idx[i],
                    B, U, f_idx[i].numel(), r_idx[i].numel(), sizes[2], sizes[3], *gstr,
                    cf, cr, rows,
                    BLOCK_U=BLOCK_U, BLOCK_K=32,
                )  # fmt: skip
            grads.append(g.to(dtype) if low_in_interp else g)
        return (None, None, *grads, *([None] * (2 * n)))


def selective_loss(
    feats: list[torch.Tensor], f_idx: list[torch.Tensor], r_idx: list[torch.Tensor], alpha: float
) -> torch.Tensor:
    """Same contract as `spec.selective_loss`: fp32 scalar, differentiable once w.r.t. feats."""
    feats = list(feats)
    if not feats:
        return spec.selective_loss(feats, f_idx, r_idx, alpha)
    dev = feats[0].device
    fi = [_index(ix, dev) for ix in f_idx]
    ri = [_index(ix, dev) for ix in r_idx]
    degenerate = any(
        f.dim() < 1 or f.shape[0] == 0 or a.numel() == 0 or b.numel() == 0 for f, a, b in zip(feats, fi, ri)
    )
    if degenerate or not (len(feats) == len(fi) == len(ri)):
        # empty batch or index set: the spec's mean of nothing (NaN) or its error, as specified
        return spec.selective_loss(feats, f_idx, r_idx, alpha)
    # taps of more than 4 dims: flatten here, so autograd owns the (copying) reshape
    feats = [f.reshape(f.shape[0], -1) if f.dim() > 4 else f for f in feats]
    return SelectiveLoss.apply(float(alpha), len(feats), *feats, *fi, *ri)

"""Triton `tv_loss`: total variation, forward and backward, reading x through its strides.

Spec: `reference.tv_loss`: mean over the batch of sum_{c,i<H-1,j<W-1} sqrt(dx^2 + dy^2 + TV_EPS) with
dx = x[i+1,j] - x[i,j], dy = x[i,j+1] - x[i,j]. TV_EPS comes from reference.py (one constant).

Tiling (both passes): each program owns BLOCK_P image planes (b, c) x BLOCK_W columns and a chunk
of rows, and streams down its rows: row i+1 is loaded once (whole 16-byte vectors when W is a multiple
of 16), used as the lower neighbour, then carried as row i. The plane/column offsets are computed once
a program; the row loop moves a scalar offset only (no division or modulo per element). The right
(and, backward, left) neighbours are the same rows read one element over (scalar loads).
Forward: one partial per program (already divided by B); torch sums the partials (deterministic, no
atomics, no zero-fill).
Backward: each program *gathers* its pixels' gradient (no atomics, no zero-fill): pixel (i,j) receives
-(dx+dy)/t from its own term, dx/t from the term of (i-1,j) (carried from the previous row) and dy/t
from the term of (i,j-1) (recomputed from the row read one element left), each where that term exists
(a factor go or 0 per column, fixed for the program), t = sqrt(dx^2 + dy^2 + TV_EPS).

Numerics: differences are taken in fp32 after loading. For fp32 input this is the reference's
formula bit for bit; for fp16/bf16 the reference subtracts in the low dtype first, so ours is the
more accurate of the two. The gradient is computed in fp32 and cast once to x's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .. import reference
from . import cdiv, device_ctx, interpret, max_programs, next_pow2

TV_EPS = reference.TV_EPS  # must stay the reference's constant: the loss value and its gradient depend on it


@triton.jit
def _tile(pid, NP, Cn, sb, sc, sw, NS, NCH, rows, HX, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program pid's tile: BLOCK_P planes (b, c) x BLOCK_W columns x one chunk [r0, r1) of HX rows.
    The divisions are per program and per plane, never per element."""
    ch = pid % NCH
    t = pid // NCH
    s = t % NS
    pb = t // NS
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    j = s * BLOCK_W + tl.arange(0, BLOCK_W)
    poff = (p // Cn).to(tl.int64) * sb + (p % Cn).to(tl.int64) * sc
    off = poff[:, None] + j.to(tl.int64)[None, :] * sw  # loop-invariant: the row loop moves a scalar base only
    r0 = ch * rows
    r1 = tl.minimum(HX, r0 + rows)
    return p < NP, j, off, r0, r1


@triton.jit
def _term(xc, xd, xr, EPS: tl.constexpr):
    dx = xd - xc
    dy = xr - xc
    return tl.sqrt(tl.fma(dx, dx, tl.fma(dy, dy, EPS)))


@triton.jit
def _tv_fwd_kernel(
    x_ptr, part_ptr,
    NP, Cn, H, W, B,
    sb, sc, sh, sw,
    NS, NCH, rows,
    EPS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    p_ok, j, off, r0, r1 = _tile(pid, NP, Cn, sb, sc, sw, NS, NCH, rows, H - 1, BLOCK_P, BLOCK_W)
    # tile over all W columns (mask j < W: whole 16-byte vectors when W is a multiple of 16); the terms
    # (i, j) with both neighbours are j < W-1 (the mask applied once at the end) and i < H-1 (the rows)
    m = p_ok[:, None] & (j < W)[None, :]
    m_r = p_ok[:, None] & (j < W - 1)[None, :]
    ptr = x_ptr + off
    row = r0.to(tl.int64) * sh
    xc = tl.load(ptr + row, mask=m, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_P, BLOCK_W), dtype=tl.float32)
    # stream down the rows: row i+1 is loaded once, used as the lower neighbour, then carried as row i
    # two rows an iteration (halves the loop-carried copies), then the odd row
    for _ in range((r1 - r0) // 2):
        xr = tl.load(ptr + row + sw, mask=m_r).to(tl.float32)
        row += sh
        xd = tl.load(ptr + row, mask=m).to(tl.float32)
        xr2 = tl.load(ptr + row + sw, mask=m_r).to(tl.float32)
        row += sh
        xd2 = tl.load(ptr + row, mask=m).to(tl.float32)
        acc += _term(xc, xd, xr, EPS)  # masked lanes: anything, dropped once, below
        acc += _term(xd, xd2, xr2, EPS)
        xc = xd2
    if (r1 - r0) % 2 == 1:
        xr = tl.load(ptr + row + sw, mask=m_r).to(tl.float32)
        xd = tl.load(ptr + row + sh, mask=m).to(tl.float32)
        acc += _term(xc, xd, xr, EPS)
    tl.store(part_ptr + pid, tl.sum(tl.sum(tl.where(m_r, acc, 0.0), axis=1), axis=0) / B)


@triton.jit
def _tv_bwd_kernel(
    x_ptr, g_ptr, go_ptr,
    NP, Cn, H, W, B,
    sb, sc, sh, sw,
    gb, gc, gh, gw,
    NS, NCH, rows,
    EPS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    p_ok, j, off, r0, r1 = _tile(pid, NP, Cn, sb, sc, sw, NS, NCH, rows, H, BLOCK_P, BLOCK_W)
    # the same tile of g (its own strides): planes and columns as x's
    _, _, goff, _, _ = _tile(pid, NP, Cn, gb, gc, gw, NS, NCH, rows, H, BLOCK_P, BLOCK_W)
    go = tl.load(go_ptr).to(tl.float32) / B  # d loss / d (sum over one sample), the batch mean's 1/B
    m = p_ok[:, None] & (j < W)[None, :]
    m_r = p_ok[:, None] & (j < W - 1)[None, :]
    m_l = p_ok[:, None] & (j >= 1)[None, :]
    # go where the term exists, 0 elsewhere: r = c / t is then the scaled 1/t or 0, no select in the loop
    c_own = tl.where(m_r, go, 0.0)  # term (i, j) exists for j < W-1 (and i < H-1: the loop's rows)
    c_left = tl.where(m_l, go, 0.0)  # term (i, j-1) exists for j >= 1
    ptr = x_ptr + off
    gptr = g_ptr + goff
    row = r0.to(tl.int64) * sh
    grow = r0.to(tl.int64) * gh
    xc = tl.load(ptr + row, mask=m, other=0.0).to(tl.float32)
    xcl = tl.load(ptr + row - sw, mask=m_l, other=0.0).to(tl.float32)
    # a_up: x[i, j]'s share of the term of (i-1, j), dx / t; recomputed once for the chunk's first row
    up = r0 > 0
    xu = tl.load(ptr + row - sh, mask=m & up, other=0.0).to(tl.float32)
    xur = tl.load(ptr + row - sh + sw, mask=m_r & up, other=0.0).to(tl.float32)
    dx = xc - xu
    dy = xur - xu
    a_up = dx * (tl.where(up, c_own, 0.0) / tl.sqrt(dx * dx + dy * dy + EPS))
    # rows that have a row below; the image's last row (only the term above reaches it) after the loop
    for _ in range(r0, tl.minimum(r1, H - 1)):
        xr = tl.load(ptr + row + sw, mask=m_r, other=0.0).to(tl.float32)
        row += sh
        xd = tl.load(ptr + row, mask=m, other=0.0).to(tl.float32)
        xdl = tl.load(ptr + row - sw, mask=m_l, other=0.0).to(tl.float32)
        # own term (i, j): d/dx[i,j] = -(dx + dy) / t
        dx = xd - xc
        dy = xr - xc
        r = c_own / tl.sqrt(dx * dx + dy * dy + EPS)
        # term of (i, j-1): x[i,j] is its right neighbour; d/dx[i,j] = dy / t
        dxl = xdl - xcl
        dyl = xc - xcl
        rl = c_left / tl.sqrt(dxl * dxl + dyl * dyl + EPS)
        g = a_up + dyl * rl - (dx + dy) * r
        tl.store(gptr + grow, g.to(g_ptr.dtype.element_ty), mask=m)
        grow += gh
        a_up = dx * r  # term of (i, j) seen from x[i+1, j], its lower neighbour
        xc = xd
        xcl = xdl
    if r1 == H:
        tl.store(gptr + grow, a_up.to(g_ptr.dtype.element_ty), mask=m)


def _config(W: int, n_planes: int, n_rows: int, programs: int) -> dict:
    """Tile (BLOCK_P planes x BLOCK_W columns, TILE elements: 8 a thread at 4 warps) and row chunks.
    BLOCK_W: the widest power of two that pads the W columns by at most 1/16 (224 -> 32, 32 -> 32)."""
    tile = 1024
    bw = next_pow2(max(W, 1))
    if W > 16:
        bw = next((c for c in (128, 64, 32) if (cdiv(W, c) * c - W) * 16 <= cdiv(W, c) * c), 16)
    bp = max(1, tile // bw)
    bp = min(bp, max(next_pow2(n_planes), max(1, 32 // bw)))  # few planes: a smaller tile
    ns = cdiv(W, bw)
    base = cdiv(n_planes, bp) * ns
    if interpret():
        rows = 8  # several chunks on the tests' shapes
    else:  # enough programs to fill the GPU, at least 8 rows each (one extra row read per chunk)
        rows = max(8, cdiv(n_rows, max(1, cdiv(programs, base))))
    rows = max(1, min(rows, n_rows))
    nch = cdiv(n_rows, rows)
    return {"BLOCK_P": bp, "BLOCK_W": bw, "NS": ns, "NCH": nch, "rows": rows, "grid": base * nch}


def _forward(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    cfg = _config(W, B * C, H - 1, max_programs(x.device, per_sm=8))
    part = torch.empty(cfg["grid"], dtype=torch.float32, device=x.device)
    with device_ctx(x):
        _tv_fwd_kernel[(cfg["grid"],)](
            x, part, B * C, C, H, W, B, *x.stride(), cfg["NS"], cfg["NCH"], cfg["rows"],
            EPS=TV_EPS, BLOCK_P=cfg["BLOCK_P"], BLOCK_W=cfg["BLOCK_W"], num_warps=4,
        )  # fmt: skip
    return part.sum()


def _backward(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    # the interpreter's bf16 stores are wrong: compute an fp32 gradient there and cast in torch
    low_in_interp = interpret() and x.dtype == torch.bfloat16
    g = torch.empty_like(x, dtype=torch.float32 if low_in_interp else x.dtype)  # keeps x's memory format
    xi = x.float() if low_in_interp else x
    cfg = _config(W, B * C, H, max_programs(x.device, per_sm=8))
    go = grad_out.reshape(1).to(device=x.device, dtype=torch.float32)
    with device_ctx(x):
        _tv_bwd_kernel[(cfg["grid"],)](
            xi, g, go, B * C, C, H, W, B, *xi.stride(), *g.stride(), cfg["NS"], cfg["NCH"], cfg["rows"],
            EPS=TV_EPS, BLOCK_P=cfg["BLOCK_P"], BLOCK_W=cfg["BLOCK_W"], num_warps=4,
        )  # fmt: skip
    return g.to(x.dtype) if low_in_interp else g


class TVLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        xi = x.float() if (interpret() and x.dtype == torch.bfloat16) else x
        return _forward(xi)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return _backward(x, grad_out)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Same contract as `reference.tv_loss` (fp32 scalar, differentiable once w.r.t. x)."""
    if x.dim() != 4 or x.shape[2] < 2 or x.shape[3] < 2 or x.shape[0] == 0 or x.shape[1] == 0:
        return reference.tv_loss(x)  # no pixel has both neighbours (or no sample): the spec's own answer
    return TVLoss.apply(x)

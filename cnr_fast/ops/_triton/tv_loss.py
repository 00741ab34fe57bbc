"""Triton `tv_loss`: total variation, forward and backward, reading x through its strides.

Spec: `spec.tv_loss`: mean over the batch of sum_{c,i<H-1,j<W-1} sqrt(dx^2 + dy^2 + TV_EPS) with
dx = x[i+1,j] - x[i,j], dy = x[i,j+1] - x[i,j]. TV_EPS comes from spec.py (one constant).

Tiling (both passes): each program owns BLOCK_P image planes (b, c) x BLOCK_Q groups of 8 columns
and a chunk of rows, and streams down its rows: row i+1 is loaded once, used as the lower neighbour,
then carried as row i. A group's 8 columns are one thread's: loaded as two vectors of 4 (16 / 8-byte
loads for fp32 / bf16 when W and the strides allow) and split in registers (`tl.split`, no shared
memory), so the right neighbour of columns 0..6 is the next register; only the column right of the
group (and, backward, the one left of it) is a scalar load, one per 8 pixels. The plane/column
offsets are computed once a program; the row loop moves a scalar offset only (no division or
modulo per element).
Forward: one partial per program (already divided by B); torch sums the partials (deterministic, no
atomics, no zero-fill).
Backward: each program *gathers* its pixels' gradient (no atomics, no zero-fill): pixel (i,j) receives
-(dx+dy)/t from its own term, dx/t from the term of (i-1,j) (carried from the previous row) and dy/t
from the term of (i,j-1) (the previous column's own term, in registers; for a group's first column
the term left of the group, recomputed), each where that term exists (a factor go or 0 per column,
fixed for the program), t = sqrt(dx^2 + dy^2 + TV_EPS).

Numerics: differences are taken in fp32 after loading. For fp32 input this is the spec's
formula bit for bit; for fp16/bf16 the spec subtracts in the low dtype first, so ours is the
more accurate of the two. The gradient is computed in fp32 and cast once to x's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .. import spec
from . import cdiv, device_ctx, interpret, max_programs, next_pow2

TV_EPS = spec.TV_EPS  # must stay the spec's constant: the loss value and its gradient depend on it


@triton.jit
def _split4(x):
    """[BP, BQ, 4] -> its 4 columns, each [BP, BQ] (in-thread: 4 columns are one thread's vector)."""
    P: tl.constexpr = x.shape[0]
    Q: tl.constexpr = x.shape[1]
    e, o = tl.split(tl.reshape(x, (P, Q, 2, 2)))  # columns 0, 2 | 1, 3
    c0, c2 = tl.split(e)
    c1, c3 = tl.split(o)
    return c0, c1, c2, c3


@triton.jit
def _load8(ptr, m_lo, m_hi, s4):
    """A tile row as groups of 8 columns, each group's columns as 8 fp32 [BP, BQ] tensors: two loads of
    4 columns (16 / 8-byte vectors for fp32 / bf16 when W and the strides allow), split in registers."""
    c0, c1, c2, c3 = _split4(tl.load(ptr, mask=m_lo, other=0.0).to(tl.float32))
    c4, c5, c6, c7 = _split4(tl.load(ptr + s4, mask=m_hi, other=0.0).to(tl.float32))
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _store8(ptr, c0, c1, c2, c3, c4, c5, c6, c7, m_lo, m_hi, s4):
    """The inverse of `_load8`: 8 fp32 columns stored as two vectors of 4 in ptr's dtype."""
    P: tl.constexpr = c0.shape[0]
    Q: tl.constexpr = c0.shape[1]
    lo = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), (P, Q, 4))
    hi = tl.reshape(tl.join(tl.join(c4, c6), tl.join(c5, c7)), (P, Q, 4))
    tl.store(ptr, lo.to(ptr.dtype.element_ty), mask=m_lo)
    tl.store(ptr + s4, hi.to(ptr.dtype.element_ty), mask=m_hi)


@triton.jit
def _tile(pid, NP, Cn, sb, sc, NS, NCH, rows, HX, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr):
    """Program pid's tile: BLOCK_P planes (b, c) x BLOCK_Q groups of 8 columns x one chunk [r0, r1)
    of HX rows. The divisions are per program and per plane, never per element."""
    ch = pid % NCH
    t = pid // NCH
    s = t % NS
    pb = t // NS
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    q = s * BLOCK_Q + tl.arange(0, BLOCK_Q)
    poff = (p // Cn).to(tl.int64) * sb + (p % Cn).to(tl.int64) * sc
    r0 = ch * rows
    r1 = tl.minimum(HX, r0 + rows)
    return p < NP, q, poff, r0, r1


@triton.jit
def _ptrs(base, poff, q, p_ok, W, sw):
    """Pointers and masks of a tile row: the groups' first 4 columns [BP, BQ, 4] (the other 4: the
    same + 4 columns, mask m_hi), the column right of each group, the column left of it."""
    j = q[:, None] * 8 + tl.arange(0, 4)[None, :]  # the group's first 4 columns; the other 4 at +4
    ptr = base + (poff[:, None, None] + j.to(tl.int64)[None, :, :] * sw)
    m = p_ok[:, None, None] & (j < W)[None, :, :]
    m_hi = p_ok[:, None, None] & (j + 4 < W)[None, :, :]
    jn = q * 8 + 8
    nptr = base + (poff[:, None] + jn.to(tl.int64)[None, :] * sw)
    mn = p_ok[:, None] & (jn < W)[None, :]
    lptr = nptr - 9 * sw
    ml = p_ok[:, None] & ((q >= 1) & (q * 8 < W))[None, :]
    return ptr, m, m_hi, nptr, mn, lptr, ml


@triton.jit
def _term(xc, xd, xr, EPS: tl.constexpr):
    dx = xd - xc
    dy = xr - xc
    return tl.sqrt(tl.fma(dx, dx, tl.fma(dy, dy, EPS)))


@triton.jit
def _row_terms(c0, c1, c2, c3, c4, c5, c6, c7, cn, d0, d1, d2, d3, d4, d5, d6, d7,
               a0, a1, a2, a3, a4, a5, a6, a7, EPS: tl.constexpr):  # fmt: skip
    """Add the terms of one row (c: the row, cn: the column right of each group, d: the row below)."""
    a0 += _term(c0, d0, c1, EPS)
    a1 += _term(c1, d1, c2, EPS)
    a2 += _term(c2, d2, c3, EPS)
    a3 += _term(c3, d3, c4, EPS)
    a4 += _term(c4, d4, c5, EPS)
    a5 += _term(c5, d5, c6, EPS)
    a6 += _term(c6, d6, c7, EPS)
    a7 += _term(c7, d7, cn, EPS)
    return a0, a1, a2, a3, a4, a5, a6, a7


@triton.jit
def _masked_sum(a, q, r: tl.constexpr, p_ok, W):
    return tl.sum(tl.sum(tl.where(p_ok[:, None] & (q * 8 + r < W - 1)[None, :], a, 0.0), axis=1), axis=0)


@triton.jit
def _tv_fwd_kernel(
    x_ptr, part_ptr,
    NP, Cn, H, W, B,
    sb, sc, sh, sw,
    NS, NCH, rows,
    EPS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    p_ok, q, poff, r0, r1 = _tile(pid, NP, Cn, sb, sc, NS, NCH, rows, H - 1, BLOCK_P, BLOCK_Q)
    ptr, m, mh, nptr, mn, _, _ = _ptrs(x_ptr, poff, q, p_ok, W, sw)
    sw4 = 4 * sw
    # the terms (i, j) with both neighbours are j < W-1 (masked once at the end) and i < H-1 (the
    # rows). A row is loaded as groups of 8 columns and split in registers: the right neighbour of
    # columns 0..6 of a group is the next column of the same group, of column 7 one scalar load.
    row = r0.to(tl.int64) * sh
    c0, c1, c2, c3, c4, c5, c6, c7 = _load8(ptr + row, m, mh, sw4)
    cn = tl.load(nptr + row, mask=mn, other=0.0).to(tl.float32)
    a0 = tl.zeros((BLOCK_P, BLOCK_Q), dtype=tl.float32)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    # stream down the rows: row i+1 is loaded once, used as the lower neighbour, then carried as row i
    # two rows an iteration (no loop-carried copies), then the odd row
    for _ in range((r1 - r0) // 2):
        row += sh
        d0, d1, d2, d3, d4, d5, d6, d7 = _load8(ptr + row, m, mh, sw4)
        dn = tl.load(nptr + row, mask=mn, other=0.0).to(tl.float32)
        a0, a1, a2, a3, a4, a5, a6, a7 = _row_terms(
            c0, c1, c2, c3, c4, c5, c6, c7, cn, d0, d1, d2, d3, d4, d5, d6, d7, a0, a1, a2, a3, a4, a5, a6, a7, EPS
        )
        row += sh
        c0, c1, c2, c3, c4, c5, c6, c7 = _load8(ptr + row, m, mh, sw4)
        cn = tl.load(nptr + row, mask=mn, other=0.0).to(tl.float32)
        a0, a1, a2, a3, a4, a5, a6, a7 = _row_terms(
            d0, d1, d2, d3, d4, d5, d6, d7, dn, c0, c1, c2, c3, c4, c5, c6, c7, a0, a1, a2, a3, a4, a5, a6, a7, EPS
        )
    if (r1 - r0) % 2 == 1:
        row += sh
        d0, d1, d2, d3, d4, d5, d6, d7 = _load8(ptr + row, m, mh, sw4)
        a0, a1, a2, a3, a4, a5, a6, a7 = _row_terms(
            c0, c1, c2, c3, c4, c5, c6, c7, cn, d0, d1, d2, d3, d4, d5, d6, d7, a0, a1, a2, a3, a4, a5, a6, a7, EPS
        )
    total = _masked_sum(a0, q, 0, p_ok, W) + _masked_sum(a1, q, 1, p_ok, W) + _masked_sum(a2, q, 2, p_ok, W)
    total += _masked_sum(a3, q, 3, p_ok, W) + _masked_sum(a4, q, 4, p_ok, W) + _masked_sum(a5, q, 5, p_ok, W)
    total += _masked_sum(a6, q, 6, p_ok, W) + _masked_sum(a7, q, 7, p_ok, W)
    tl.store(part_ptr + pid, total / B)


@triton.jit
def _own(xc, xd, xr, k, EPS: tl.constexpr):
    """One term's pieces for the gradient: dx, dy and s = k / t (k: go where the term exists, else 0)."""
    dx = xd - xc
    dy = xr - xc
    return dx, dy, k / tl.sqrt(tl.fma(dx, dx, tl.fma(dy, dy, EPS)))


@triton.jit
def _k(go, p_ok, q, r: tl.constexpr, W):
    return tl.where(p_ok[:, None] & (q * 8 + r < W - 1)[None, :], go, 0.0)


@triton.jit
def _tv_bwd_kernel(
    x_ptr, g_ptr, go_ptr,
    NP, Cn, H, W, B,
    sb, sc, sh, sw,
    gb, gc, gh, gw,
    NS, NCH, rows,
    EPS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    p_ok, q, poff, r0, r1 = _tile(pid, NP, Cn, sb, sc, NS, NCH, rows, H, BLOCK_P, BLOCK_Q)
    # the same tile of g (its own strides): planes and columns as x's
    _, _, goff, _, _ = _tile(pid, NP, Cn, gb, gc, NS, NCH, rows, H, BLOCK_P, BLOCK_Q)
    go = tl.load(go_ptr).to(tl.float32) / B  # d loss / d (sum over one sample), the batch mean's 1/B
    ptr, m, mh, nptr, mn, lptr, ml = _ptrs(x_ptr, poff, q, p_ok, W, sw)
    sw4 = 4 * sw
    gptr, _, _, _, _, _, _ = _ptrs(g_ptr, goff, q, p_ok, W, gw)
    g4 = 4 * gw
    # k: go where the term (i, j) exists (j < W-1; i < H-1 are the loop's rows), 0 elsewhere, so
    # s = k / t is the scaled 1/t or 0 with no select in the loop; kl: the term left of each group
    k0 = _k(go, p_ok, q, 0, W)
    k1 = _k(go, p_ok, q, 1, W)
    k2 = _k(go, p_ok, q, 2, W)
    k3 = _k(go, p_ok, q, 3, W)
    k4 = _k(go, p_ok, q, 4, W)
    k5 = _k(go, p_ok, q, 5, W)
    k6 = _k(go, p_ok, q, 6, W)
    k7 = _k(go, p_ok, q, 7, W)
    kl = tl.where(ml, go, 0.0)
    row = r0.to(tl.int64) * sh
    grow = r0.to(tl.int64) * gh
    c0, c1, c2, c3, c4, c5, c6, c7 = _load8(ptr + row, m, mh, sw4)
    cn = tl.load(nptr + row, mask=mn, other=0.0).to(tl.float32)
    cl = tl.load(lptr + row, mask=ml, other=0.0).to(tl.float32)
    # a: x[i, j]'s share of the term of (i-1, j), dx / t; recomputed once for the chunk's first row
    up = r0 > 0
    u0, u1, u2, u3, u4, u5, u6, u7 = _load8(ptr + row - sh, m & up, mh & up, sw4)
    un = tl.load(nptr + row - sh, mask=mn & up, other=0.0).to(tl.float32)
    dx, _, s = _own(u0, c0, u1, tl.where(up, k0, 0.0), EPS)
    a0 = dx * s
    dx, _, s = _own(u1, c1, u2, tl.where(up, k1, 0.0), EPS)
    a1 = dx * s
    dx, _, s = _own(u2, c2, u3, tl.where(up, k2, 0.0), EPS)
    a2 = dx * s
    dx, _, s = _own(u3, c3, u4, tl.where(up, k3, 0.0), EPS)
    a3 = dx * s
    dx, _, s = _own(u4, c4, u5, tl.where(up, k4, 0.0), EPS)
    a4 = dx * s
    dx, _, s = _own(u5, c5, u6, tl.where(up, k5, 0.0), EPS)
    a5 = dx * s
    dx, _, s = _own(u6, c6, u7, tl.where(up, k6, 0.0), EPS)
    a6 = dx * s
    dx, _, s = _own(u7, c7, un, tl.where(up, k7, 0.0), EPS)
    a7 = dx * s
    # rows that have a row below; the image's last row (only the term above reaches it) after the loop.
    # Pixel (i, j) gets a (term above), dy/t of the term left of it (column j-1: the previous column
    # of the group, or for column 0 the term of the column left of the group, recomputed) and
    # -(dx + dy)/t of its own term.
    for _ in range(r0, tl.minimum(r1, H - 1)):
        row += sh
        d0, d1, d2, d3, d4, d5, d6, d7 = _load8(ptr + row, m, mh, sw4)
        dn = tl.load(nptr + row, mask=mn, other=0.0).to(tl.float32)
        dl = tl.load(lptr + row, mask=ml, other=0.0).to(tl.float32)
        _, yl, sl = _own(cl, dl, c0, kl, EPS)
        x0, y0, s0 = _own(c0, d0, c1, k0, EPS)
        x1, y1, s1 = _own(c1, d1, c2, k1, EPS)
        x2, y2, s2 = _own(c2, d2, c3, k2, EPS)
        x3, y3, s3 = _own(c3, d3, c4, k3, EPS)
        x4, y4, s4 = _own(c4, d4, c5, k4, EPS)
        x5, y5, s5 = _own(c5, d5, c6, k5, EPS)
        x6, y6, s6 = _own(c6, d6, c7, k6, EPS)
        x7, y7, s7 = _own(c7, d7, cn, k7, EPS)
        _store8(
            gptr + grow,
            a0 + yl * sl - (x0 + y0) * s0,
            a1 + y0 * s0 - (x1 + y1) * s1,
            a2 + y1 * s1 - (x2 + y2) * s2,
            a3 + y2 * s2 - (x3 + y3) * s3,
            a4 + y3 * s3 - (x4 + y4) * s4,
            a5 + y4 * s4 - (x5 + y5) * s5,
            a6 + y5 * s5 - (x6 + y6) * s6,
            a7 + y6 * s6 - (x7 + y7) * s7,
            m, mh, g4,
        )
        grow += gh
        # the terms of row i seen from x[i+1, j], their lower neighbour
        a0 = x0 * s0
        a1 = x1 * s1
        a2 = x2 * s2
        a3 = x3 * s3
        a4 = x4 * s4
        a5 = x5 * s5
        a6 = x6 * s6
        a7 = x7 * s7
        c0, c1, c2, c3, c4, c5, c6, c7 = d0, d1, d2, d3, d4, d5, d6, d7
        cn = dn
        cl = dl
    if r1 == H:
        _store8(gptr + grow, a0, a1, a2, a3, a4, a5, a6, a7, m, mh, g4)


def _config(W: int, n_planes: int, n_rows: int, programs: int) -> dict:
    """Tile (BLOCK_P planes x BLOCK_W = 8 * BLOCK_Q columns, TILE elements: 8 a thread at 4 warps) and
    row chunks. BLOCK_W: the widest power of two >= 8 that pads the W columns by at most 1/16
    (224 -> 32, 32 -> 32)."""
    tile = 1024
    bw = max(8, next_pow2(max(W, 1)))  # groups of 8 columns
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
    return {"BLOCK_P": bp, "BLOCK_W": bw, "BLOCK_Q": bw // 8, "NS": ns, "NCH": nch, "rows": rows, "grid": base * nch}


def _forward(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    cfg = _config(W, B * C, H - 1, max_programs(x.device, per_sm=8))
    part = torch.empty(cfg["grid"], dtype=torch.float32, device=x.device)
    with device_ctx(x):
        _tv_fwd_kernel[(cfg["grid"],)](
            x, part, B * C, C, H, W, B, *x.stride(), cfg["NS"], cfg["NCH"], cfg["rows"],
            EPS=TV_EPS, BLOCK_P=cfg["BLOCK_P"], BLOCK_Q=cfg["BLOCK_Q"], num_warps=4,
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
            EPS=TV_EPS, BLOCK_P=cfg["BLOCK_P"], BLOCK_Q=cfg["BLOCK_Q"], num_warps=4,
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
    """Same contract as `spec.tv_loss` (fp32 scalar, differentiable once w.r.t. x)."""
    if x.dim() != 4 or x.shape[2] < 2 or x.shape[3] < 2 or x.shape[0] == 0 or x.shape[1] == 0:
        return spec.tv_loss(x)  # no pixel has both neighbours (or no sample): the spec's own answer
    return TVLoss.apply(x)

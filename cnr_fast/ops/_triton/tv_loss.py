"""Triton `tv_loss`: total variation, forward and backward, reading x through its strides.

Spec: `reference.tv_loss`: mean over the batch of sum_{c,i<H-1,j<W-1} sqrt(dx^2 + dy^2 + TV_EPS) with
dx = x[i+1,j] - x[i,j], dy = x[i,j+1] - x[i,j]. TV_EPS comes from reference.py (one constant).

Forward: grid-stride programs each sum sqrt(...) over their pixels and write one partial (already
divided by B); torch sums the partials (deterministic, no atomics, no zero-fill).
Backward: one program per block of pixels *gathers* its gradient (no atomics, no zero-fill): pixel
(i,j) receives -(dx+dy)/t from its own term, dx/t from the term of (i-1,j) and dy/t from the term of
(i,j-1), each where that term exists, t = sqrt(dx^2 + dy^2 + TV_EPS).

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
from . import cdiv, device_ctx, interpret, max_programs

TV_EPS = reference.TV_EPS  # must stay the reference's constant: the loss value and its gradient depend on it


@triton.jit
def _tv_fwd_kernel(
    x_ptr, part_ptr,
    total, Cn, H, W, B,
    sb, sc, sh, sw,
    EPS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    Hm = H - 1
    Wm = W - 1
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    # an iteration counter, not `range(pid * BLOCK, total, step)`: that loop's int32 induction variable
    # start + step wraps past 2**31 (negative, loop goes on) when total is within step of 2**31. Here
    # start <= total - 1 and n < total + BLOCK <= 2**31 (the size guard, MAX_ELEMENTS), all int32.
    step = nprog * BLOCK
    for it in range(tl.cdiv(total - pid * BLOCK, step)):
        start = pid * BLOCK + it * step
        n = start + tl.arange(0, BLOCK)  # over the B*C*(H-1)*(W-1) pixels that have both neighbours
        ok = n < total
        j = n % Wm
        t = n // Wm
        i = t % Hm
        p = t // Hm
        base = (p // Cn).to(tl.int64) * sb + (p % Cn).to(tl.int64) * sc + i.to(tl.int64) * sh + j.to(tl.int64) * sw
        x0 = tl.load(x_ptr + base, mask=ok, other=0.0).to(tl.float32)
        xd = tl.load(x_ptr + base + sh, mask=ok, other=0.0).to(tl.float32)
        xr = tl.load(x_ptr + base + sw, mask=ok, other=0.0).to(tl.float32)
        dx = xd - x0
        dy = xr - x0
        acc += tl.where(ok, tl.sqrt(dx * dx + dy * dy + EPS), 0.0)
    tl.store(part_ptr + pid, tl.sum(acc, axis=0) / B)


@triton.jit
def _tv_bwd_kernel(
    x_ptr, g_ptr, go_ptr,
    total, Cn, H, W, B,
    sb, sc, sh, sw,
    gb, gc, gh, gw,
    EPS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    go = tl.load(go_ptr).to(tl.float32) / B  # d loss / d (sum over one sample), the batch mean's 1/B
    step = nprog * BLOCK
    for it in range(tl.cdiv(total - pid * BLOCK, step)):  # no int32 wrap (see the forward)
        start = pid * BLOCK + it * step
        n = start + tl.arange(0, BLOCK)  # over all B*C*H*W pixels
        ok = n < total
        j = n % W
        t = n // W
        i = t % H
        p = t // H
        b = (p // Cn).to(tl.int64)
        c = (p % Cn).to(tl.int64)
        i64 = i.to(tl.int64)
        j64 = j.to(tl.int64)
        base = b * sb + c * sc + i64 * sh + j64 * sw
        xc = tl.load(x_ptr + base, mask=ok, other=0.0).to(tl.float32)
        # own term (i, j): needs i < H-1 and j < W-1; d/dx[i,j] = -(dx + dy) / t
        m_a = ok & (i < H - 1) & (j < W - 1)
        xd = tl.load(x_ptr + base + sh, mask=m_a, other=0.0).to(tl.float32)
        xr = tl.load(x_ptr + base + sw, mask=m_a, other=0.0).to(tl.float32)
        dx = xd - xc
        dy = xr - xc
        g = tl.where(m_a, -(dx + dy) / tl.sqrt(dx * dx + dy * dy + EPS), 0.0)
        # term of (i-1, j): x[i,j] is its lower neighbour; d/dx[i,j] = dx / t
        m_b = ok & (i >= 1) & (j < W - 1)
        xu = tl.load(x_ptr + base - sh, mask=m_b, other=0.0).to(tl.float32)
        xur = tl.load(x_ptr + base - sh + sw, mask=m_b, other=0.0).to(tl.float32)
        dx = xc - xu
        dy = xur - xu
        g += tl.where(m_b, dx / tl.sqrt(dx * dx + dy * dy + EPS), 0.0)
        # term of (i, j-1): x[i,j] is its right neighbour; d/dx[i,j] = dy / t
        m_c = ok & (j >= 1) & (i < H - 1)
        xl = tl.load(x_ptr + base - sw, mask=m_c, other=0.0).to(tl.float32)
        xld = tl.load(x_ptr + base - sw + sh, mask=m_c, other=0.0).to(tl.float32)
        dx = xld - xl
        dy = xc - xl
        g += tl.where(m_c, dy / tl.sqrt(dx * dx + dy * dy + EPS), 0.0)
        gbase = b * gb + c * gc + i64 * gh + j64 * gw
        tl.store(g_ptr + gbase, (g * go).to(g_ptr.dtype.element_ty), mask=ok)


def _block() -> int:
    return 2048 if interpret() else 1024


def _forward(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    total = B * C * (H - 1) * (W - 1)
    BLOCK = _block()
    grid = min(cdiv(total, BLOCK), max_programs(x.device))
    part = torch.empty(grid, dtype=torch.float32, device=x.device)
    with device_ctx(x):
        _tv_fwd_kernel[(grid,)](x, part, total, C, H, W, B, *x.stride(), EPS=TV_EPS, BLOCK=BLOCK)
    return part.sum()


def _backward(x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    # the interpreter's bf16 stores are wrong: compute an fp32 gradient there and cast in torch
    low_in_interp = interpret() and x.dtype == torch.bfloat16
    g = torch.empty_like(x, dtype=torch.float32 if low_in_interp else x.dtype)  # keeps x's memory format
    xi = x.float() if low_in_interp else x
    total = B * C * H * W
    BLOCK = _block()
    grid = min(cdiv(total, BLOCK), max_programs(x.device, per_sm=8))
    go = grad_out.reshape(1).to(device=x.device, dtype=torch.float32)
    with device_ctx(x):
        _tv_bwd_kernel[(grid,)](xi, g, go, total, C, H, W, B, *xi.stride(), *g.stride(), EPS=TV_EPS, BLOCK=BLOCK)
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

"""Triton kernels on CUDA in fp16 / bf16 / fp32, at realistic sizes.

Tolerance relative to PyTorch's own error: err(kernel) <= 2 x err(torch, same input dtype) + atol,
both measured against a float64 computation on the same (already rounded) inputs.
Skipped without a CUDA device (tests/conftest.py skips the `gpu` marker).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

pytest.importorskip("triton")

from cnr_fast import ops
from cnr_fast.ops import backend, spec
from cnr_fast.ops._triton import class_sums as cs_mod
from cnr_fast.ops._triton import selective_loss as sl_mod
from cnr_fast.ops._triton import selectivity as sel_mod
from cnr_fast.ops._triton import tv_loss as tv_mod

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _err(a, ref64):
    return (a.double() - ref64).abs().max().item()


def _check(kernel, torch_same, ref64, atol, what=""):
    ek, et = _err(kernel, ref64), _err(torch_same, ref64)
    assert ek <= 2 * et + atol, f"{what}: err(kernel)={ek:.3g} > 2 x err(torch)={et:.3g} + {atol:.3g}"


def _randn(*shape, seed, dtype, channels_last=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(*shape, generator=g, device="cuda").to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


# (N, feature shape, C, channels_last)
CLASS_SUMS = [
    (4096, (64 * 8 * 8,), 10, False),
    (4096, (64 * 8 * 8,), 100, False),
    (1000, (64, 8, 8), 100, True),  # channels_last tap map
    (777, (333,), 1000, False),  # many class blocks, awkward sizes
    (3, (70,), 5, False),  # tiny; empty classes
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,fshape,c,cl", CLASS_SUMS)
def test_class_sums_gpu(n, fshape, c, cl, dtype):
    x = _randn(n, *fshape, seed=n + c, dtype=dtype, channels_last=cl)
    y = torch.randint(0, c, (n,), device="cuda")
    sums, counts = cs_mod.class_sums(x, y, c)
    rs, rc = spec.class_sums(x, y, c)
    ref64 = torch.zeros(c, x[0].numel(), dtype=torch.float64, device="cuda").index_add_(0, y, x.reshape(n, -1).double())
    assert torch.equal(counts, rc)
    _check(sums, rs, ref64, atol=1e-4 * (1 + ref64.abs().max().item()), what=f"class_sums {dtype}")


# (C, U, forget, retain, k)
SELECTIVITY = [
    (10, 4096, [3], list(range(10))[:3] + list(range(4, 10)), 40),
    (100, 8192, [0, 5, 99], list(range(1, 5)), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,u,forget,retain,k", SELECTIVITY)
def test_selectivity_gpu(c, u, forget, retain, k, dtype):
    means = _randn(c, u, seed=c + u, dtype=dtype)
    s, fi, ri = sel_mod.selectivity_topk(means, forget, retain, k)
    rs, rf, rr = spec.selectivity_topk(means, forget, retain, k)
    m64 = means.double()
    ref64 = m64[forget] - m64[retain].mean(0)
    _check(s, rs, ref64, atol=1e-6, what=f"selectivity {dtype}")
    if dtype == torch.float32:  # random fp32 floats: no ties, indices must match exactly
        assert torch.equal(fi, rf) and torch.equal(ri, rr)


def _tv64(x):
    x = x.double()
    dx = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dy = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    return torch.sqrt(dx**2 + dy**2 + spec.TV_EPS).sum(dim=(1, 2, 3)).mean()


TV = [(64, 3, 32, 32, False), (8, 3, 224, 224, True), (5, 3, 31, 29, False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,c,h,w,cl", TV)
def test_tv_loss_gpu(b, c, h, w, cl, dtype):
    x = _randn(b, c, h, w, seed=h * w, dtype=dtype, channels_last=cl)
    xk, xt, x64 = (x.clone().requires_grad_() for _ in range(3))
    vk = tv_mod.tv_loss(xk)
    vt = spec.tv_loss(xt)
    v64 = _tv64(x64)
    _check(vk, vt, v64.detach(), atol=1e-5 * v64.item(), what=f"tv fwd {dtype}")
    (gk,) = torch.autograd.grad(vk, xk)
    (gt,) = torch.autograd.grad(vt, xt)
    (g64,) = torch.autograd.grad(v64, x64)
    assert gk.dtype == dtype and gk.stride() == x.stride()
    _check(gk, gt, g64.double(), atol=1e-6 * g64.abs().max().item() + 1e-7, what=f"tv bwd {dtype}")


def _sel64(feats, f_idx, r_idx, alpha):
    total = 0.0
    for f, fi, ri in zip(feats, f_idx, r_idx):
        f = f.reshape(f.shape[0], -1).double()
        total = total + (f[:, fi].mean(1) - alpha * f[:, ri].mean(1)).mean()
    return total / len(feats)


# ResNet-18 (CIFAR stem) taps L1..L4 at batch 64, TopK = 1% of units per tap
TAPS = [(64, 64, 32, 32), (64, 128, 16, 16), (64, 256, 8, 8), (64, 512, 4, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_selective_loss_gpu(dtype, channels_last):
    feats = [_randn(*s, seed=i, dtype=dtype, channels_last=channels_last) for i, s in enumerate(TAPS)]
    u = [f[0].numel() for f in feats]
    fi = [torch.randperm(n, device="cuda")[: n // 100] for n in u]
    ri = [torch.randperm(n, device="cuda")[: n // 100] for n in u]
    xk = [f.clone().requires_grad_() for f in feats]
    xt = [f.clone().requires_grad_() for f in feats]
    x64 = [f.clone().double().requires_grad_() for f in feats]
    vk = sl_mod.selective_loss(xk, fi, ri, 0.5)
    vt = spec.selective_loss(xt, fi, ri, 0.5)
    v64 = _sel64(x64, fi, ri, 0.5)
    _check(vk, vt, v64.detach(), atol=1e-6, what=f"selective fwd {dtype}")
    gk = torch.autograd.grad(vk, xk)
    gt = torch.autograd.grad(vt, xt)
    g64 = torch.autograd.grad(v64, x64)
    for a, b, c, f in zip(gk, gt, g64, feats):
        assert a.dtype == dtype and a.stride() == f.stride()
        _check(a, b, c, atol=1e-9, what=f"selective bwd {dtype}")


def test_auto_dispatch_picks_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("CNR_FAST_BACKEND", raising=False)
    x = _randn(2, 3, 8, 8, seed=0, dtype=torch.float32)
    chosen, _ = backend.choose("tv_loss", x)
    assert chosen.name == "triton"
    torch.testing.assert_close(ops.tv_loss(x), spec.tv_loss(x), rtol=1e-5, atol=1e-5)
    assert backend.describe()["class_sums"]["chosen"] == "triton"


# ---------------------------------------------------------------- class_sums accuracy / non-finite / streaming


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c", [10, 100])
def test_class_sums_relu_accuracy_vs_index_add(c, dtype):
    """ReLU-like (non-negative) features at the paper's N=50k: one-sided (truncating) accumulation would
    drift; the kernel's error vs float64 must stay within 2x torch index_add_'s."""
    n, u = 50_000, 512
    g = torch.Generator(device="cuda").manual_seed(c)
    x = torch.relu(torch.randn(n, u, generator=g, device="cuda") + 0.5).to(dtype)
    y = torch.randint(0, c, (n,), device="cuda", generator=g)
    sums, counts = cs_mod.class_sums(x, y, c)
    rs, rc = spec.class_sums(x, y, c)
    ref64 = torch.zeros(c, u, dtype=torch.float64, device="cuda").index_add_(0, y, x.double())
    assert torch.equal(counts, rc)
    ek, et = _err(sums, ref64), _err(rs, ref64)
    assert ek <= 2 * et + 1e-6 * ref64.abs().max().item(), f"err(kernel)={ek:.3g} > 2 x err(index_add_)={et:.3g}"
    # streamed in batches into one accumulator: same bound
    acc = spec.class_sums_buffer(x, c)
    cnt = torch.zeros(c, dtype=torch.int64, device="cuda")
    for i in range(0, n, 256):
        cs_mod.class_sums_add(x[i : i + 256], y[i : i + 256], acc, cnt)
    assert torch.equal(cnt, rc)
    ea = _err(acc, ref64)
    assert ea <= 2 * et + 1e-6 * ref64.abs().max().item(), f"streamed err={ea:.3g} > 2 x {et:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_class_sums_non_finite_rows_gpu(dtype):
    n, c, u = 4096, 10, 64 * 8 * 8
    x = _randn(n, 64, 8, 8, seed=5, dtype=dtype, channels_last=True)
    y = torch.randint(0, c, (n,), device="cuda", generator=torch.Generator(device="cuda").manual_seed(5))
    y[:3] = torch.tensor([0, 1, 1], device="cuda")
    x[0, 1, 2, 3] = float("inf")
    x[1, 0, 0, 0] = float("nan")
    x[2, 1, 2, 3] = -float("inf")
    sums, counts = cs_mod.class_sums(x, y, c)
    rs, rc = spec.class_sums(x, y, c)
    assert torch.equal(counts, rc)
    assert torch.equal(torch.isnan(sums), torch.isnan(rs)) and torch.equal(torch.isinf(sums), torch.isinf(rs))
    fin = torch.isfinite(rs)
    assert fin[2:].all() and fin.sum() == c * u - 3  # class 0: +inf at one unit; class 1: NaN and -inf
    ref64 = torch.zeros(c, u, dtype=torch.float64, device="cuda").index_add_(0, y, x.reshape(n, -1).double())
    _check(sums[fin], rs[fin], ref64[fin], atol=1e-4 * (1 + ref64[fin].abs().max().item()), what="finite part")


def test_class_sums_add_channels_last_streaming_gpu():
    c = 100
    xs = [_randn(b, 128, 16, 16, seed=b, dtype=torch.bfloat16, channels_last=True) for b in (256, 256, 17)]
    ys = [torch.randint(0, c, (x.shape[0],), device="cuda") for x in xs]
    acc = spec.class_sums_buffer(xs[0], c)
    cnt = torch.zeros(c, dtype=torch.int64, device="cuda")
    for x, y in zip(xs, ys):
        ops.class_sums_add(x, y, acc, cnt)
    flat = torch.cat([x.reshape(x.shape[0], -1) for x in xs])
    yall = torch.cat(ys)
    rs, rc = spec.class_sums(flat, yall, c)
    ref64 = torch.zeros(c, flat.shape[1], dtype=torch.float64, device="cuda").index_add_(0, yall, flat.double())
    assert torch.equal(cnt, rc)
    _check(acc.reshape(c, -1), rs, ref64, atol=1e-4 * (1 + ref64.abs().max().item()), what="streamed channels_last")

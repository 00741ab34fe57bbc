"""Triton kernels against the spec (ops/spec.py), forward and gradients, plus the dispatch.

Without a GPU the kernels run under the Triton interpreter (tests/ops/conftest.py sets
TRITON_INTERPRET=1 before these modules import triton): fp32, small shapes, few programs.
On a CUDA machine the same tests run the compiled kernels on the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from cnr_fast import ops
from cnr_fast.ops import backend, spec
from cnr_fast.ops._triton import class_sums as cs_mod
from cnr_fast.ops._triton import selective_loss as sl_mod
from cnr_fast.ops._triton import selectivity as sel_mod
from cnr_fast.ops._triton import tv_loss as tv_mod

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1 (tests/ops/conftest.py sets it)", allow_module_level=True)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed, channels_last=False, dtype=torch.float32):
    x = torch.randn(*shape, generator=_gen(seed)).to(DEVICE, dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------- class_sums

# (feature shape per sample, N, C, label pattern, channels_last)
CLASS_SUMS_CASES = [
    ((70,), 37, 5, "one_and_empty", False),  # U not a multiple of BLOCK_U=64; class 0 one sample, class 3 empty
    ((17,), 40, 70, "random", False),  # two class blocks (BLOCK_C=64)
    ((5,), 1, 1, "random", False),  # one sample, one class
    ((33,), 130, 20, "random", False),  # several row chunks
    ((3, 5, 7), 50, 4, "one_and_empty", True),  # channels_last tap map read through strides
    ((4, 6), 29, 3, "random", False),  # 3-D (B, T, D)
]


def _labels(n, c, pattern, seed):
    y = torch.randint(0, c, (n,), generator=_gen(seed))
    if pattern == "one_and_empty" and c >= 4:
        y[y == 0] = 1
        y[0] = 0  # class 0: exactly one sample
        y[y == 3] = 2  # class 3: no sample
    return y.to(DEVICE)


@pytest.mark.parametrize("fshape,n,c,pattern,cl", CLASS_SUMS_CASES)
def test_class_sums_matches_spec(fshape, n, c, pattern, cl):
    seed = n * 1000 + c
    x = _randn(n, *fshape, seed=seed, channels_last=cl)
    y = _labels(n, c, pattern, seed)
    sums, counts = cs_mod.class_sums(x, y, c)
    rs, rc = spec.class_sums(x, y, c)
    assert sums.dtype == torch.float32 and counts.dtype == torch.int64
    assert sums.shape == rs.shape and counts.shape == rc.shape
    torch.testing.assert_close(sums, rs, rtol=1e-5, atol=1e-5)
    assert torch.equal(counts, rc)
    if pattern == "one_and_empty":
        assert counts[3] == 0 and torch.all(sums[3] == 0)
        assert counts[0] == 1
        torch.testing.assert_close(sums[0], x.reshape(n, -1)[y == 0][0].float())


def test_class_sums_split_rows_and_int32_labels_and_accumulation():
    """The multi-program (atomic) path, int32 labels, and the per-batch accumulation it is used for."""
    x = _randn(100, 40, seed=3)
    y = torch.randint(0, 6, (100,), generator=_gen(3)).to(DEVICE)
    s1, c1 = cs_mod.class_sums(x[:60], y[:60].int(), 6, _split=2)
    s2, c2 = cs_mod.class_sums(x[60:], y[60:], 6, _split=3)
    rs, rc = spec.class_sums(x, y, 6)
    torch.testing.assert_close(s1 + s2, rs, rtol=1e-5, atol=1e-5)
    assert torch.equal(c1 + c2, rc)


def test_class_sums_falls_back_to_less_shared_memory(monkeypatch):
    """A GPU with less shared memory than the H100 the configurations are sized for: the launch raises
    OutOfResources, and class_sums_add retries with fewer stages, then fewer chunks per add."""
    from triton.runtime.errors import OutOfResources

    real = cs_mod._class_sums_kernel
    seen = []

    class Small:  # a launcher that refuses anything above one stage and SUB 1
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.append((kw["num_stages"], kw["SUB"]))
                if kw["num_stages"] > 1 or kw["SUB"] > 1:
                    raise OutOfResources(300_000, 232_448, "shared memory")
                return real[grid](*args, **kw)

            return launch

    monkeypatch.setattr(cs_mod, "config", lambda *a: {**real_config(*a), "SUB": 4, "num_stages": 2})
    monkeypatch.setattr(cs_mod, "_class_sums_kernel", Small())
    x = _randn(37, 5, 6, seed=21)
    y = torch.randint(0, 7, (37,), generator=_gen(22)).to(DEVICE)
    s, n = cs_mod.class_sums(x, y, 7)
    rs, rn = spec.class_sums(x, y, 7)
    torch.testing.assert_close(s, rs, rtol=1e-5, atol=1e-5)
    assert torch.equal(n, rn)
    assert seen == [(2, 4), (1, 4), (1, 2), (1, 1)]


real_config = cs_mod.config


def test_class_sums_exact_split_dot_path():
    """The GPU's fp32 path (x split into 3 low-precision parts, one-hot dots) on the interpreter,
    with fp16 parts (the interpreter's bf16 is broken); values kept where fp16 parts stay normal."""
    import triton.language as tl

    x = (torch.rand(45, 50, generator=_gen(4)) + 0.5).to(DEVICE)
    y = torch.randint(0, 3, (45,), generator=_gen(4)).to(DEVICE)
    sums, counts = cs_mod.class_sums(x, y, 3, _fp32_mode=cs_mod._SPLIT3, _split_dtype=tl.float16)
    rs, rc = spec.class_sums(x, y, 3)
    torch.testing.assert_close(sums, rs, rtol=1e-6, atol=1e-6)
    assert torch.equal(counts, rc)


@pytest.mark.parametrize("n,u,c", [(45, 50, 3), (131, 37, 70)])
def test_class_sums_tf32_split_dot_path(n, u, c):
    """The GPU's default fp32 path (x = hi + lo, two tf32 dots; C=70 also sums SUB=2 chunks per add) on
    the interpreter, which computes the dots in fp32: checks the split, masks and loop structure, not the
    tf32 rounding (that is test_tf32_split_error_on_relu_data_vs_index_add, emulated, and the GPU test)."""
    seed = _fresh(f"tf32 {n} {u} {c}")
    g = _gen(seed)
    x = torch.relu(torch.randn(n, u, generator=g) + 0.3).to(DEVICE)
    y = torch.randint(0, c, (n,), generator=g).to(DEVICE)
    sums, counts = cs_mod.class_sums(x, y, c, _fp32_mode=cs_mod._TF32X2, _split=2)
    rs, rc = spec.class_sums(x, y, c)
    torch.testing.assert_close(sums, rs, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")
    assert torch.equal(counts, rc)


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """What the tf32 MMA reads of an fp32 value: the 13 low mantissa bits dropped (truncation)."""
    return (x.view(torch.int32) & -8192).view(torch.float32)


def test_tf32_split_is_exact_in_hi_and_small_in_lo():
    """hi = x with 13 low bits cleared is exact in tf32, lo = x - hi is exact in fp32 and the tf32 MMA's
    view of lo loses < 2^-21 |x| (emulated on CPU, fresh random inputs of all magnitudes)."""
    g = _gen(_fresh("tf32 split"))
    x = torch.randn(100_000, generator=g) * torch.exp2(torch.randint(-60, 60, (100_000,), generator=g).float())
    hi = _tf32(x)
    lo = x - hi
    assert torch.equal(_tf32(hi), hi)
    assert torch.equal(hi.double() + lo.double(), x.double())  # the split itself is exact
    err = (hi.double() + _tf32(lo).double() - x.double()).abs()
    assert (err <= x.double().abs() * 2.0**-21).all()


@pytest.mark.parametrize("c", [10, 100])
def test_tf32_split_error_on_relu_data_vs_index_add(c):
    """The fp32 kernel's arithmetic emulated on CPU: hi/lo tf32 parts, per-partial (SUB * BLOCK_N rows)
    tensor-core sums truncated toward zero to fp32 (the worst case), round-to-nearest fp32 adds across
    partials. On ReLU-like data its error vs float64 stays within 2x index_add_'s (fp32)."""
    seed = _fresh(f"tf32 relu {c}")
    g = _gen(seed)
    n, u = 20_000, 64
    x = torch.relu(torch.randn(n, u, generator=g) + 0.5)
    y = torch.randint(0, c, (n,), generator=g)
    cfg = cs_mod.config(torch.float32, c, cs_mod._TF32X2)
    rows = cfg["SUB"] * cfg["BLOCK_N"]
    hi = _tf32(x)
    lo = _tf32(x - hi)
    acc = torch.zeros(c, u)
    for i in range(0, n, rows):
        oh = torch.nn.functional.one_hot(y[i : i + rows], c).double().T
        p64 = oh @ hi[i : i + rows].double() + oh @ lo[i : i + rows].double()
        p = p64.float()
        p = torch.where(p.double().abs() > p64.abs(), torch.nextafter(p, torch.zeros_like(p)), p)  # truncate
        acc = acc + p
    ref = torch.zeros(c, u, dtype=torch.float64).index_add_(0, y, x.double())
    e_ia = (torch.zeros(c, u).index_add_(0, y, x).double() - ref).abs().max().item()
    e_k = (acc.double() - ref).abs().max().item()
    assert e_k <= 2 * e_ia, f"seed {seed}: emulated err {e_k:.3g} > 2 x index_add_ err {e_ia:.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_class_sums_low_precision_inputs(dtype):
    x = _randn(31, 20, seed=5, dtype=dtype)
    y = torch.randint(0, 4, (31,), generator=_gen(5)).to(DEVICE)
    sums, counts = cs_mod.class_sums(x, y, 4)
    rs, rc = spec.class_sums(x, y, 4)
    torch.testing.assert_close(sums, rs, rtol=1e-5, atol=1e-5)  # exact inputs, fp32 accumulation in both
    assert torch.equal(counts, rc)


def _fresh(seed_name: str) -> int:
    """A fresh seed per run (printed on failure through the test's assertion message)."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item()) ^ hash(seed_name) & 0x7FFFFFFF


@pytest.mark.parametrize(
    "fshape,cl",
    [((3, 7, 5), True), ((5, 3, 3), False), ((2, 4, 4), True), ((13, 9), False)],
)
def test_class_sums_add_streams_batches_in_own_layout(fshape, cl):
    """Several batches of odd shapes accumulated into one persistent buffer (channels_last kept as is,
    no flattening copy); the means come out in (C, H, W) unit order; fresh random inputs each run."""
    seed = _fresh(str(fshape))
    g = _gen(seed)
    C = 6
    xs = [torch.randn(n, *fshape, generator=g) for n in (7, 1, 12)]
    if cl:
        xs = [x.to(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, C, (x.shape[0],), generator=g) for x in xs]
    xs, ys = [x.to(DEVICE) for x in xs], [y.to(DEVICE) for y in ys]
    sums = spec.class_sums_buffer(xs[0], C)
    assert sums.shape == (C, *fshape) and sums.stride()[1:] == torch.empty_like(xs[0][:1]).stride()[1:]
    counts = torch.zeros(C, dtype=torch.int64, device=DEVICE)
    rs = torch.zeros(C, xs[0][0].numel(), dtype=torch.float32, device=DEVICE)
    rc = torch.zeros(C, dtype=torch.int64, device=DEVICE)
    for i, (x, y) in enumerate(zip(xs, ys)):
        cs_mod.class_sums_add(x, y, sums, counts, _split=2 if i == 2 else None)
        spec.class_sums_add(x, y, rs, rc)
    torch.testing.assert_close(sums.reshape(C, -1), rs, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")
    assert torch.equal(counts, rc), f"seed {seed}"
    flat = torch.cat([x.reshape(x.shape[0], -1) for x in xs])
    yall = torch.cat(ys)
    torch.testing.assert_close(rs, spec.class_sums(flat, yall, C)[0], rtol=1e-5, atol=1e-5)


def test_class_sums_add_into_flat_buffer_and_without_counts():
    """A (C, U) accumulator for a channels_last map (feats copied once into its layout), counts=None."""
    x = _randn(9, 3, 2, 5, seed=8, channels_last=True)
    y = torch.randint(0, 4, (9,), generator=_gen(8)).to(DEVICE)
    sums = torch.full((4, 30), 1.5, device=DEVICE)
    cs_mod.class_sums_add(x, y, sums)
    torch.testing.assert_close(sums, 1.5 + spec.class_sums(x, y, 4)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("split", [1, 2])
def test_class_sums_non_finite_rows_poison_only_their_class(split):
    """inf / -inf / NaN rows reach only their own class (no 0 * inf = NaN in the other classes)."""
    g = _gen(_fresh("nonfinite") + split)
    n, C, U = 45, 5, 21
    x = torch.rand(n, U, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    y[:4] = torch.tensor([0, 1, 2, 2])
    x[0, 3] = float("inf")  # class 0: +inf at unit 3
    x[1, 3] = float("nan")  # class 1: NaN at unit 3
    x[2, 5] = float("inf")
    x[3, 5] = -float("inf")  # class 2: inf + -inf = NaN at unit 5
    x, y = x.to(DEVICE), y.to(DEVICE)
    sums, counts = cs_mod.class_sums(x, y, C, _split=split)
    rs, rc = spec.class_sums(x, y, C)
    torch.testing.assert_close(sums, rs, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.equal(counts, rc)
    assert torch.isfinite(sums[3:]).all() and torch.isfinite(sums[:, [u for u in range(U) if u not in (3, 5)]]).all()


# ---------------------------------------------------------------- selectivity_topk

# (C, U, forget, retain, k)
SELECTIVITY_CASES = [
    (10, 300, [3], [0, 1, 2, 4, 5, 6, 7, 8, 9], 7),
    (5, 37, [0, 2, 4], [1], 1),  # one retain class, several forget classes, k=1
    (12, 1500, [11, -1, 0], [1, 2, 3, 5], 64),  # U > BLOCK_U, negative index, repeated forget class
    (3, 20, [2], [0, 1], 20),  # k = U
]


@pytest.mark.parametrize("c,u,forget,retain,k", SELECTIVITY_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_selectivity_topk_matches_spec(c, u, forget, retain, k, dtype):
    means = _randn(c, u, seed=c * 10 + u, dtype=dtype)  # random floats: no ties
    s, fi, ri = sel_mod.selectivity_topk(means, forget, retain, k)
    rs, rf, rr = spec.selectivity_topk(means, forget, retain, k)
    assert s.dtype == torch.float32 and s.shape == rs.shape
    torch.testing.assert_close(s, rs, rtol=1e-6, atol=1e-6)
    assert torch.equal(fi, rf) and torch.equal(ri, rr)


def test_selectivity_topk_rejects_out_of_range_class():
    with pytest.raises(IndexError, match="out of range"):
        sel_mod.selectivity_topk(_randn(3, 8, seed=0), [3], [0], 1)


# ---------------------------------------------------------------- tv_loss

# (B, C, H, W, channels_last)
TV_CASES = [
    (2, 3, 5, 7, False),  # odd H x W
    (1, 1, 2, 2, False),  # one pixel with both neighbours
    (2, 3, 16, 17, True),  # channels_last
    (1, 2, 33, 9, False),  # more pixels than one block in the backward
    (3, 2, 1, 6, False),  # H = 1: no pixel has both neighbours (loss 0)
    (2, 2, 11, 40, False),  # five groups of 8 columns over three column strips
    (1, 3, 9, 24, True),  # whole groups, channels_last
]


@pytest.mark.parametrize("b,c,h,w,cl", TV_CASES)
def test_tv_loss_forward_and_grad(b, c, h, w, cl):
    x = _randn(b, c, h, w, seed=b * 100 + h * 10 + w, channels_last=cl)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    v1 = tv_mod.tv_loss(x1)
    v2 = spec.tv_loss(x2)
    assert v1.dtype == torch.float32 and v1.shape == ()
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(v1 * 1.7, x1)
    (g2,) = torch.autograd.grad(v2 * 1.7, x2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert g1.stride() == x.stride()


def test_tv_loss_flat_image_eps_and_finite_grad():
    x = torch.zeros(2, 1, 4, 4, device=DEVICE, requires_grad=True)
    v = tv_mod.tv_loss(x)
    assert float(v.detach()) == pytest.approx(float(spec.tv_loss(x.detach())), rel=1e-6)
    (g,) = torch.autograd.grad(v, x)
    assert torch.isfinite(g).all() and torch.all(g == 0)


def test_tv_loss_bf16_keeps_dtype():
    x = _randn(2, 3, 6, 5, seed=7, dtype=torch.bfloat16).requires_grad_()
    v = tv_mod.tv_loss(x)
    (g,) = torch.autograd.grad(v, x)
    assert v.dtype == torch.float32 and g.dtype == torch.bfloat16
    xf = x.detach().float().requires_grad_()
    vf = spec.tv_loss(xf)
    (gf,) = torch.autograd.grad(vf, xf)
    torch.testing.assert_close(v, vf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, gf.bfloat16(), rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------- selective_loss

# (tap shapes, channels_last per tap, Kf per tap, Kr per tap, alpha)
SELECTIVE_CASES = [
    ([(4, 70), (4, 3, 5, 7), (4, 6, 10)], [False, True, False], [9, 5, 1], [5, 7, 3], 0.5),
    ([(1, 33)], [False], [1], [1], 2.0),  # one tap, one sample, k = 1
    ([(3, 20), (5, 17)], [False, False], [4, 17], [2, 6], 0.0),  # taps with different batch sizes, K = U
    ([(2, 300)], [False], [40], [70], 1.0),  # U and K beyond one block
]


def _indices(u, k, seed, allow_negative=False):
    g = _gen(seed)
    lo = -u if allow_negative else 0
    ix = torch.randint(lo, u, (k,), generator=g)
    if k > 2:
        ix[1] = ix[0]  # a duplicate counts twice, as in the spec's gather
    return ix.to(DEVICE)


@pytest.mark.parametrize("shapes,cls,kf,kr,alpha", SELECTIVE_CASES)
def test_selective_loss_forward_and_grad(shapes, cls, kf, kr, alpha):
    feats = [_randn(*s, seed=i + 11, channels_last=cl) for i, (s, cl) in enumerate(zip(shapes, cls))]
    fi = [_indices(f[0].numel(), k, seed=20 + i) for i, (f, k) in enumerate(zip(feats, kf))]
    ri = [_indices(f[0].numel(), k, seed=40 + i, allow_negative=True) for i, (f, k) in enumerate(zip(feats, kr))]
    x1 = [f.clone().requires_grad_() for f in feats]
    x2 = [f.clone().requires_grad_() for f in feats]
    v1 = sl_mod.selective_loss(x1, fi, ri, alpha)
    v2 = spec.selective_loss(x2, fi, ri, alpha)
    assert v1.dtype == torch.float32 and v1.shape == ()
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    g1 = torch.autograd.grad(v1 * 1.3, x1)
    g2 = torch.autograd.grad(v2 * 1.3, x2)
    for a, b, f in zip(g1, g2, feats):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert a.stride() == f.stride()


def test_selective_loss_grad_only_where_required_and_list_indices():
    a = _randn(3, 10, seed=1).requires_grad_()
    b = _randn(3, 2, 4, seed=2)  # no grad wanted
    v1 = sl_mod.selective_loss([a, b], [[0, 3], [1]], [[9], [7, -1]], 0.25)
    v2 = spec.selective_loss([a, b], [[0, 3], [1]], [[9], [7, -1]], 0.25)
    torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(v1, a)
    (g2,) = torch.autograd.grad(v2, a)
    torch.testing.assert_close(g1, g2)


# ---------------------------------------------------------------- dispatch


def _args(op):
    x = _randn(6, 12, seed=0)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=DEVICE)
    return {
        "class_sums": (x, y, 3),
        "class_sums_add": (x, y, torch.zeros(3, 12, device=DEVICE), torch.zeros(3, dtype=torch.int64, device=DEVICE)),
        "selectivity_topk": (x[:3], [0], [1, 2], 2),
        "tv_loss": (_randn(1, 2, 4, 5, seed=1),),
        "selective_loss": ([x], [torch.tensor([1, 2], device=DEVICE)], [torch.tensor([3], device=DEVICE)], 0.5),
    }[op]


OPS = ["class_sums", "class_sums_add", "selectivity_topk", "tv_loss", "selective_loss"]


@pytest.mark.parametrize("op", OPS)
def test_explicit_triton_backend_dispatch(op, monkeypatch):
    monkeypatch.setenv("CNR_FAST_BACKEND", "triton")
    args = _args(op)
    chosen, _ = backend.choose(op, *args)
    assert chosen.name == "triton"
    assert chosen.target.startswith("cnr_fast.ops._triton.")
    if op == "class_sums_add":  # in place: compare the accumulators each one filled
        x, y, s, c = args
        s2, c2 = s.clone(), c.clone()
        ops.class_sums_add(x, y, s, c)
        spec.class_sums_add(x, y, s2, c2)
        got, want = (s, c), (s2, c2)
    else:
        got = getattr(ops, op)(*args)
        want = getattr(spec, op)(*args)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_torch_is_last_and_triton_registered(op):
    names = [b.name for b in backend.REGISTRY[op]]
    assert names[-1] == "torch" and "triton" in names


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU-only behaviour of the automatic choice")
def test_auto_choice_stays_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("CNR_FAST_BACKEND", raising=False)
    for op in OPS:
        chosen, why = backend.choose(op, *_args(op))
        assert chosen.name == "torch"
        assert why["triton"], "skipping triton must say why"
    monkeypatch.delenv("TRITON_INTERPRET")
    chosen, why = backend.choose("tv_loss", *_args("tv_loss"))
    assert chosen.name == "torch" and "TRITON_INTERPRET" in why["triton"][0]


def test_explicit_backend_that_cannot_run_raises_with_reason(monkeypatch):
    monkeypatch.setenv("CNR_FAST_BACKEND", "triton")
    x64 = torch.randn(2, 3, 4, 4, dtype=torch.float64, device=DEVICE)
    with pytest.raises(backend.BackendError, match="float64 unsupported"):
        ops.tv_loss(x64)
    with pytest.raises(backend.BackendError, match="4-D"):
        ops.tv_loss(torch.randn(3, 4, 4, device=DEVICE))
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(backend.BackendError, match="TRITON_INTERPRET != 1"):
            ops.class_sums(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 2)


def test_describe_reports_choice_and_reasons(monkeypatch):
    monkeypatch.delenv("CNR_FAST_BACKEND", raising=False)
    d = backend.describe()
    for op in OPS:
        assert set(d[op]["reasons"]) == {"triton", "torch"}
        assert d[op]["reasons"]["torch"] == []
        expected = "triton" if DEVICE == "cuda" else "torch"
        assert d[op]["chosen"] == expected
        if DEVICE == "cpu":
            assert d[op]["reasons"]["triton"]
    assert d["linear_cka"]["chosen"] is not None


def test_import_is_lean_and_cpu_dispatch_does_not_import_triton():
    code = (
        "import sys, torch, cnr_fast, cnr_fast.ops as o\n"
        "assert 'triton' not in sys.modules, 'import cnr_fast imported triton'\n"
        "o.class_sums(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 2)\n"
        "o.tv_loss(torch.randn(1, 1, 3, 3))\n"
        "assert 'triton' not in sys.modules, 'CPU dispatch imported triton'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CNR_FAST_BACKEND")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr

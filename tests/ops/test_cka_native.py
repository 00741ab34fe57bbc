"""Batched linear CKA (cnr_fast.ops.cka): the three paths (feature space, torch Gram, native Gram)
against float64 numpy, pytorch-cka / torch-cka, invariances, torch.library.opcheck, the dispatch by
cost, and the path without the extension."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cnr_fast import _native
from cnr_fast.ops import backend, spec
from cnr_fast.ops import cka as ops_cka
from cnr_fast.ops.cka import cka_matrix, cka_matrix_feature, cka_matrix_native, cka_matrix_torch

NATIVE = _native.available()
needs_native = pytest.mark.skipif(not NATIVE, reason=f"cnr_fast._C unavailable: {_native.load_error()}")

# Awkward sizes: odd N, a 1-feature tap, a tap wider than N, N just above the unbiased minimum.
SHAPES = [
    (7, [1, 5, 130], [5, 1]),
    (33, [1, 5, 130], [130, 5, 1]),
    (4, [3, 9], [2]),
    (600, [40, 7], [300, 40]),  # several staircase panels in the native op
]
IMPLS = ["torch", "feature", "auto", pytest.param("native", marks=needs_native)]


def _impl(name):
    return {"torch": cka_matrix_torch, "feature": cka_matrix_feature, "native": cka_matrix_native,
            "auto": cka_matrix}[name]


# ----------------------------------------------------------------------------------------------
# float64 numpy oracles (the textbook formulas, written independently of the code under test)


def np_cka_biased(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def np_hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    k = k.copy()
    l = l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    tr_kl = float((k * l.T).sum())  # tr(K L) without the n^3 product
    return float((tr_kl + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * (one @ k) @ (l @ one)) / (n * (n - 3)))


def np_cka_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T  # uncentred on purpose: the estimator is invariant to centring
    return np_hsic_unbiased(k, l) / np.sqrt(np_hsic_unbiased(k, k) * np_hsic_unbiased(l, l))


def np_matrix(fa, fb, unbiased):
    f = np_cka_unbiased if unbiased else np_cka_biased
    a = [t.reshape(t.shape[0], -1).double().numpy() for t in fa]
    b = [t.reshape(t.shape[0], -1).double().numpy() for t in fb]
    return torch.tensor([[f(x, y) for y in b] for x in a], dtype=torch.float64)


def _taps(n, dims, gen, shift=0.5, base=None):
    """ReLU-like taps with a non-zero mean; with `base`, correlated with it (values away from 0)."""
    out = []
    for i, d in enumerate(dims):
        x = torch.randn(n, d, generator=gen, dtype=torch.float64).clamp_min(0) + shift
        if base is not None and base[i % len(base)].shape[1] == d:
            x = x + 2.0 * base[i % len(base)]
        out.append(x)
    return out


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("n,da,db", SHAPES)
def test_matches_numpy(impl, dtype, unbiased, n, da, db):
    gen = torch.Generator().manual_seed(n * 100 + len(da))
    fa = _taps(n, da, gen)
    fb = _taps(n, db, gen, base=fa)
    want = np_matrix(fa, fb, unbiased)
    got = _impl(impl)([t.to(dtype) for t in fa], [t.to(dtype) for t in fb], unbiased=unbiased)
    assert got.dtype == torch.float64 and got.shape == (len(da), len(db))
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got, want, atol=tol, rtol=0)
    if len(da) == len(db):
        d = _impl(impl)(fa, fb, unbiased=unbiased, pairs="diag")
        torch.testing.assert_close(d, torch.diagonal(want), atol=1e-9, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("unbiased", [False, True])
def test_self_is_one_and_invariances(impl, unbiased):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(33, 20, generator=gen, dtype=torch.float64).clamp_min(0) + 1.0
    y = torch.randn(33, 7, generator=gen, dtype=torch.float64) + x[:, :7]
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    f = _impl(impl)
    base = f([x], [y], unbiased=unbiased)
    torch.testing.assert_close(f([x], [x], unbiased=unbiased), torch.ones(1, 1, dtype=torch.float64))
    variants = [x @ q, 3.7 * x, 0.01 * x @ q, x + 5.0]  # orthogonal, isotropic scale, both, translation
    got = f(variants, [y], unbiased=unbiased)
    torch.testing.assert_close(got, base.expand(len(variants), 1), atol=1e-10, rtol=0)


# Fresh random inputs (a new seed every run), odd shapes, taps both narrower (n > d) and wider
# (n < d) than the examples: every path against the float64 numpy oracles.
FRESH = [
    (41, [97, 3], [13, 211]),  # n < d and n > d mixed within one call
    (203, [17, 5], [31, 2]),  # n > d: the feature form's home
    (29, [301, 157], [263]),  # n < d: the Gram form's home
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("n,da,db", FRESH)
def test_paths_match_numpy_on_fresh_inputs(impl, unbiased, n, da, db):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    fa = [torch.from_numpy(np.maximum(rng.normal(size=(n, d)), 0) + rng.uniform(0.1, 2)) for d in da]
    fb = [torch.from_numpy(rng.normal(size=(n, d)) + 0.5 * fa[0][:, :1].numpy()) for d in db]
    want = np_matrix(fa, fb, unbiased)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 5e-5)):
        got = _impl(impl)([t.to(dtype) for t in fa], [t.to(dtype) for t in fb], unbiased=unbiased)
        torch.testing.assert_close(got, want, atol=tol, rtol=0, msg=lambda m: f"seed {seed}: {m}")
    k = min(len(da), len(db))
    got = _impl(impl)(fa[:k], fb[:k], unbiased=unbiased, pairs="diag")
    torch.testing.assert_close(got, torch.diagonal(want)[:k], atol=1e-9, rtol=0, msg=lambda m: f"seed {seed}: {m}")


def _meta(n, dims, dtype=torch.float32):
    return [torch.empty(n, d, device="meta", dtype=dtype) for d in dims]


def test_plan_by_cost():
    # issue #9: n = 10k, d = 512: feature space (1.6e10 FLOP) beats the Grams (2e11 + 2 x 400 MB)
    p = ops_cka.plan(_meta(10_000, [512]), _meta(10_000, [512]), True, "diag")
    assert p.path == "feature" and p.costs["feature"] * 10 < p.costs["gram"]
    # wide taps (d >> n): the Gram form
    p = ops_cka.plan(_meta(500, [6272, 3136]), _meta(500, [4096]), False, "all")
    assert p.path == "gram" and p.costs["gram"] < p.costs["feature"]
    # the CNN taps of bench_cka at n = 1000, all pairs: Gram; their diagonal: the narrow tap in feature space
    cnn = [6272, 3136, 1568, 1024, 64]
    assert ops_cka.plan(_meta(1000, cnn), _meta(1000, cnn), True, "all").path == "gram"
    p = ops_cka.plan(_meta(1000, cnn), _meta(1000, cnn), True, "diag")
    assert p.path == "feature+gram" and p.feature_pairs == (4,) and p.gram_pairs == (0, 1, 2, 3)
    # the choice is the argmin of the modelled costs, and it moves with n at fixed d
    for n in (64, 256, 1024, 4096, 16384):
        p = ops_cka.plan(_meta(n, [700]), _meta(n, [900]), False, "all")
        assert p.path == min(("feature", "gram"), key=p.costs.get)
    assert ops_cka.plan(_meta(64, [700]), _meta(64, [900])).path == "gram"
    assert ops_cka.plan(_meta(16384, [700]), _meta(16384, [900])).path == "feature"


def test_plan_native_only_where_it_earned_its_place(monkeypatch):
    x = [torch.randn(40, 300), torch.randn(40, 200)]  # Gram-shaped: n < d
    monkeypatch.setitem(ops_cka.NATIVE_GRAM_SPEEDUP, "cpu", 1.2)
    p = ops_cka.plan(x, x, True, "all")
    assert p.path == "gram" and any("1.20x" in r for r in p.native_reasons)
    # the dispatcher runs the plan (here the torch Gram), and says so: "planned", not the native Gram
    chosen, why = backend.choose("cka_matrix", x, x, unbiased=True, pairs="all")
    assert chosen.name == "planned" and why["native"]
    torch.testing.assert_close(cka_matrix(x, x, unbiased=True), cka_matrix_torch(x, x, True, "all"), atol=1e-12, rtol=0)
    monkeypatch.setitem(ops_cka.NATIVE_GRAM_SPEEDUP, "cpu", 2.0)
    p = ops_cka.plan(x, x, True, "all")
    if NATIVE:
        assert p.path == "native" and not p.native_reasons and p.costs["native"] == p.costs["gram"] / 2.0
        assert backend.choose("cka_matrix", x, x, unbiased=True, pairs="all")[0].name == "native"
        p = ops_cka.plan([x[0], torch.randn(40, 3)], [x[1], torch.randn(40, 2)], True, "diag")
        assert p.path == "feature+native" and p.feature_pairs == (1,)
        torch.testing.assert_close(ops_cka.run_plan(p, [x[0], x[1]], [x[1], x[0]], True, "diag"),
                                   cka_matrix_torch([x[0], x[1]], [x[1], x[0]], True, "diag"), atol=1e-5, rtol=0)
        # a narrow call stays in feature space even where the native op is allowed
        y = [torch.randn(400, 5)]
        assert ops_cka.plan(y, y).path == "feature"
        assert backend.choose("linear_cka", y[0], y[0])[0].name == "torch"
        assert backend.choose("linear_cka", x[0], x[1])[0].name == "native"  # n < d: the Gram form
    else:
        assert p.path == "gram" and p.native_reasons
    # with the recorded CPU speedup (under 1.5x) neither op gets the native Gram automatically
    monkeypatch.setitem(ops_cka.NATIVE_GRAM_SPEEDUP, "cpu", 1.48)
    assert backend.choose("linear_cka", x[0], x[1])[0].name == "torch"
    assert ops_cka.plan(x, x).path == "gram"
    xg = x[0].clone().requires_grad_()
    assert ops_cka.plan([xg], [x[1]]).gram_engine == "gram"  # no backward in the native op
    monkeypatch.delitem(ops_cka.NATIVE_GRAM_SPEEDUP, "cpu")
    assert any("not measured" in r for r in ops_cka.plan(x, x).native_reasons)


@needs_native
def test_forced_native_backend_runs_native(monkeypatch):
    monkeypatch.setitem(ops_cka.NATIVE_GRAM_SPEEDUP, "cpu", 0.5)  # the cost model would never pick it
    monkeypatch.setenv("CNR_FAST_BACKEND", "native")
    y = [torch.randn(400, 5, dtype=torch.float64)]
    assert backend.choose("cka_matrix", y, y, unbiased=False, pairs="all")[0].name == "native"
    torch.testing.assert_close(cka_matrix(y, y), torch.ones(1, 1, dtype=torch.float64))


def test_diag_mixed_plan_matches_numpy():
    gen = torch.Generator().manual_seed(21)
    fa = _taps(50, [400, 3, 11], gen)  # wide (Gram), narrow, narrow (feature space)
    fb = _taps(50, [400, 3, 7], gen, base=fa)
    for unbiased in (False, True):
        p = ops_cka.plan(fa, fb, unbiased, "diag")
        assert p.feature_pairs == (1, 2) and p.gram_pairs == (0,)
        got = cka_matrix(fa, fb, unbiased=unbiased, pairs="diag")
        torch.testing.assert_close(got, torch.diagonal(np_matrix(fa, fb, unbiased)), atol=1e-9, rtol=0)


def test_feature_path_is_differentiable():
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    for unbiased in (False, True):
        torch.autograd.gradcheck(lambda t, u=unbiased: cka_matrix_feature([t], [y], unbiased=u), (x,))


@pytest.mark.parametrize("impl", IMPLS)
def test_biased_equals_spec_linear_cka(impl):
    gen = torch.Generator().manual_seed(5)
    fa = [torch.randn(31, 4, 3, 3, generator=gen), torch.randn(31, 17, generator=gen)]  # 4-d tap is flattened
    fb = [torch.randn(31, 6, generator=gen) + fa[1][:, :6], torch.randn(31, 2, 5, generator=gen)]
    got = _impl(impl)(fa, fb)
    want = torch.stack([torch.stack([spec.linear_cka(a, b) for b in fb]) for a in fa])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


@needs_native
def test_native_awkward_layouts():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(9, 4, 5, 6, generator=gen)
    views = [
        x.to(memory_format=torch.channels_last),  # non-contiguous after reshape -> copied
        x.permute(0, 3, 2, 1),  # permuted
        x[:, ::2],  # strided
        x[:, 0, 0, :1],  # one feature, non-unit row stride
        x.half(),  # computed in float32
    ]
    got = cka_matrix_native(views, [x], unbiased=True)
    want = cka_matrix_torch([v.float() for v in views], [x], unbiased=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_pytorch_cka_unbiased(impl):
    cka = pytest.importorskip("cka", reason="pytorch-cka (pip install pytorch-cka==1.1.3, in the dev extra) not installed")
    if not hasattr(cka, "cka_from_features"):
        pytest.skip("the installed `cka` module is not pytorch-cka 1.1.3")
    gen = torch.Generator().manual_seed(1)
    fa = _taps(64, [32, 130, 5], gen)
    fb = _taps(64, [32, 130, 9, 1], gen, base=fa)
    # pytorch-cka in float64: in float32 its uncentred U-statistic cancels badly on ReLU features
    # (off by ~5e-3 at N=1000, D=6272 in bench/bench_cka.py); ours centres first.
    theirs = cka.cka_from_features(fa, fb)
    for dtype in (torch.float64, torch.float32):
        ours = _impl(impl)([t.to(dtype) for t in fa], [t.to(dtype) for t in fb], unbiased=True)
        # pytorch-cka clamps to [0, 1]; we report the raw estimate
        torch.testing.assert_close(ours.clamp(0, 1), theirs, atol=1e-4, rtol=0)
    assert (ours.clamp(0, 1) - ours).abs().max() < 0.2  # the clamp is not hiding large differences


def test_matches_torch_cka_hsic():
    torch_cka = pytest.importorskip("torch_cka", reason="torch-cka (pip install torch-cka==0.21) not installed")
    gen = torch.Generator().manual_seed(2)
    x, y = (t.float() for t in _taps(40, [12, 7], gen))  # its _HSIC builds float32 ones vectors
    k, l = x @ x.T, y @ y.T
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    fake = SimpleNamespace(device="cpu")  # _HSIC only reads self.device
    hsic = lambda a, b: torch_cka.CKA._HSIC(fake, a, b)
    want = hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
    assert abs(cka_matrix([x], [y], unbiased=True).item() - want) < 1e-5


def test_linear_cka_backends_agree():
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(50, 3, 4, generator=gen), torch.randn(50, 9, generator=gen)
    want = spec.linear_cka(x, y)
    for b in backend.REGISTRY["linear_cka"]:
        if b.name in ("native", "torch") and not b.not_supported_reasons(x, y):
            torch.testing.assert_close(b.fn(x, y), want, atol=1e-6, rtol=0)


def test_dispatch_and_errors():
    gen = torch.Generator().manual_seed(6)
    a = [torch.randn(10, 3, generator=gen)]
    chosen, reasons = backend.choose("cka_matrix", a, a, unbiased=False, pairs="all")
    # automatic choice: native only where the cost model (and the device's measured speedup) picks it
    assert chosen.name == ("native" if ops_cka.plan(a, a).path == "native" else "planned")
    if chosen.name != "native":
        assert "native" in reasons
    with pytest.raises(ValueError, match="pairs"):
        cka_matrix(a, a, pairs="upper")
    with pytest.raises(ValueError, match="diag"):
        cka_matrix(a, a + a, pairs="diag")
    with pytest.raises(ValueError, match="N >= 4"):
        cka_matrix([torch.randn(3, 2)], [torch.randn(3, 2)], unbiased=True)
    with pytest.raises(ValueError, match="same N"):
        cka_matrix(a, [torch.randn(9, 3)])
    with pytest.raises(TypeError):
        cka_matrix(a[0], a[0])


def test_requires_grad_uses_the_differentiable_fallback():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    chosen, reasons = backend.choose("cka_matrix", [x], [y], unbiased=True, pairs="all")
    assert chosen.name == "planned" and ops_cka.plan([x], [y], True).gram_engine == "gram"  # torch only
    if NATIVE:
        assert any("grad" in r for r in reasons["native"])
    torch.autograd.gradcheck(lambda t: cka_matrix([t], [y], unbiased=True), (x,))


@needs_native
def test_opcheck():
    gen = torch.Generator().manual_seed(9)
    fa = [torch.randn(9, 7, generator=gen), torch.randn(9, 2, 3, generator=gen)]
    fb = [torch.randn(9, 4, generator=gen), torch.randn(9, 5, generator=gen)]
    for unbiased in (False, True):
        for diag in (False, True):
            torch.library.opcheck(torch.ops.cnr_fast.cka_matrix.default, (fa, fb, unbiased, diag))


@pytest.fixture
def no_native(monkeypatch):
    """Pretend cnr_fast._C does not exist (import fails) for the length of a test."""
    monkeypatch.setattr(_native, "_MODULE", "cnr_fast._C_not_built")
    _native._reset_for_tests()
    yield
    monkeypatch.undo()
    _native._reset_for_tests()


def test_pure_python_path(no_native):
    assert not _native.available()
    assert "cannot import cnr_fast._C_not_built" in _native.load_error()
    gen = torch.Generator().manual_seed(10)
    fa = _taps(15, [3, 8], gen)
    fb = _taps(15, [8], gen, base=fa)
    chosen, reasons = backend.choose("cka_matrix", fa, fb, unbiased=False, pairs="all")
    assert chosen.name == "planned" and "cannot import" in reasons["native"][0]
    assert ops_cka.plan(fa, fb).gram_engine == "gram"  # the plan never uses the missing library
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert _native.lib() is None and _native.lib() is None
    assert len([x for x in w if "native library unavailable" in str(x.message)]) == 1  # warned once
    torch.testing.assert_close(cka_matrix(fa, fb), np_matrix(fa, fb, False), atol=1e-9, rtol=0)
    assert backend.choose("linear_cka", fa[0], fb[0])[0].name != "native"
    with pytest.raises(RuntimeError, match="unavailable"):
        _native.require()


def test_disable_switch(monkeypatch):
    monkeypatch.setenv(_native.DISABLE_ENV, "1")
    _native._reset_for_tests()
    try:
        assert not _native.available() and _native.state().disabled
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a deliberate switch does not warn
            assert _native.lib() is None
        monkeypatch.setenv("CNR_FAST_BACKEND", "native")
        with pytest.raises(backend.BackendError, match="disabled"):
            cka_matrix([torch.randn(5, 2)], [torch.randn(5, 2)])
    finally:
        monkeypatch.undo()
        _native._reset_for_tests()


def test_lean_import():
    code = ("import sys, cnr_fast, cnr_fast.ops, cnr_fast.ops.cka, cnr_fast._native; "
            "assert 'cnr_fast._C' not in sys.modules, 'native library loaded at import'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.skipif(os.environ.get("CNR_FAST_EXPECT_NATIVE") != "1", reason="set CNR_FAST_EXPECT_NATIVE=1 (CI) to require it")
def test_native_was_built():
    info = _native.info()
    assert info["available"], info["error"]
    if os.environ.get("CNR_FAST_EXPECT_NATIVE_CUDA") == "1":
        assert info["has_cuda"], info


# ----------------------------------------------------------------------------------------------
# GPU (run with -m gpu on a CUDA machine, extension built with CUDA)


def _cuda_native_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not _native.has_cuda():
        return f"cnr_fast._C without CUDA ({_native.info()})"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_native_reason() is not None, reason=str(_cuda_native_reason()))
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(unbiased, dtype):
    gen = torch.Generator().manual_seed(12)
    for n, da, db in SHAPES + [(1000, [8 * 28 * 28, 64], [16 * 14 * 14, 64])]:
        fa = _taps(n, da, gen)
        fb = _taps(n, db, gen, base=fa)
        want = cka_matrix_torch(fa, fb, unbiased=unbiased)  # float64 CPU
        ca, cb = [t.to("cuda", dtype) for t in fa], [t.to("cuda", dtype) for t in fb]
        got = cka_matrix(ca, cb, unbiased=unbiased)
        assert got.device.type == "cuda" and got.dtype == torch.float64
        tol = 1e-9 if dtype == torch.float64 else 2e-5
        torch.testing.assert_close(got.cpu(), want, atol=tol, rtol=0)
        if len(da) == len(db):
            d = cka_matrix(ca, cb, unbiased=unbiased, pairs="diag")
            torch.testing.assert_close(d.cpu(), torch.diagonal(want), atol=tol, rtol=0)
        want_native = ops_cka.plan(ca, cb, unbiased, "all").path == "native"
        assert (backend.choose("cka_matrix", ca, cb, unbiased=unbiased, pairs="all")[0].name == "native") == want_native
        got_native = cka_matrix_native(ca, cb, unbiased=unbiased)  # the CUDA op itself, whatever the dispatch
        torch.testing.assert_close(got_native.cpu(), want, atol=tol, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_native_reason() is not None, reason=str(_cuda_native_reason()))
def test_cuda_opcheck():
    gen = torch.Generator().manual_seed(13)
    fa = [torch.randn(9, 7, generator=gen).cuda(), torch.randn(9, 2, 3, generator=gen).cuda()]
    fb = [torch.randn(9, 4, generator=gen).cuda()]
    for unbiased in (False, True):
        torch.library.opcheck(torch.ops.cnr_fast.cka_matrix.default, (fa, fb, unbiased, False))

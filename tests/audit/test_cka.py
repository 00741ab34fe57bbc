import numpy as np
import pytest
import torch

from cnr_fast import ops
from cnr_fast.audit.cka import cka_per_tap, linear_cka


def np_cka(x, y):
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("n,d1,d2", [(50, 7, 13), (13, 40, 31), (30, 30, 1)])
def test_cka_matches_float64_formula(n, d1, d2):
    g = np.random.default_rng(n)
    x = g.normal(size=(n, d1))
    y = x[:, : min(d1, d2)] @ g.normal(size=(min(d1, d2), d2)) + g.normal(size=(n, d2))
    ours = linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert ours == pytest.approx(np_cka(x, y), abs=1e-5)
    assert ours == pytest.approx(float(ops.linear_cka(torch.from_numpy(x), torch.from_numpy(y))), abs=1e-5)


@pytest.mark.parametrize("n,d", [(40, 10), (10, 40)])
def test_cka_invariances(n, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    y = torch.randn(n, 7, generator=g, dtype=torch.float64)
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-9)  # orthogonal
    assert linear_cka(3.7 * x + 2.0, y) == pytest.approx(base, abs=1e-9)  # isotropic scale + shift
    assert 0.0 <= base <= 1.0


def test_cka_per_tap_rows():
    x = {"L0": torch.randn(20, 5), "L1": torch.randn(20, 8)}
    y = {"L0": x["L0"] * 2, "L1": torch.randn(20, 8)}
    out = cka_per_tap(x, y, torch.arange(10))
    assert out["L0"] == pytest.approx(1.0, abs=1e-6) and out["L1"] < 0.99


def test_cka_per_tap_equals_pairwise_reference():
    g = torch.Generator().manual_seed(3)
    x = {"L0": torch.randn(40, 90, generator=g), "L1": torch.randn(40, 6, generator=g)}
    y = {"L0": x["L0"] @ torch.randn(90, 30, generator=g), "L1": torch.randn(40, 6, generator=g)}
    out = cka_per_tap(x, y)  # the native batched op when it is built, else the reference
    for t, xt in x.items():
        assert out[t] == pytest.approx(np_cka(xt.numpy(), y[t].numpy()), abs=1e-5)

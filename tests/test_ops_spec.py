"""The spec ops (ops/spec.py) against independent float64 numpy computations and hand-computed values."""

import numpy as np
import pytest
import torch

from cnr_fast.ops import spec

SHAPES = [(1, 1, 1), (5, 3, 7), (64, 10, 130), (33, 4, 1)]  # (N, C, U)


@pytest.mark.parametrize("n,c,u", SHAPES)
def test_class_sums_matches_numpy_loop(n, c, u):
    g = torch.Generator().manual_seed(n * 100 + u)
    x = torch.randn(n, u, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    sums, counts = spec.class_sums(x, y, c)
    xn, yn = x.double().numpy(), y.numpy()
    for k in range(c):
        np.testing.assert_allclose(sums[k].numpy(), xn[yn == k].sum(0) if (yn == k).any() else 0, atol=1e-5)
        assert counts[k] == (yn == k).sum()
    assert sums.dtype == torch.float32 and counts.dtype == torch.int64


def test_class_sums_empty_class_and_half_input():
    x = torch.ones(3, 4, dtype=torch.float16)
    sums, counts = spec.class_sums(x, torch.tensor([0, 0, 2]), 4)
    assert counts.tolist() == [2, 0, 1, 0]
    assert sums[1].abs().sum() == 0 and sums[0].tolist() == [2.0] * 4


def test_selectivity_topk_hand_computed():
    means = torch.tensor([[0.0, 5.0, 1.0, 0.0],   # class 0 = forget
                          [1.0, 0.0, 0.0, 2.0],   # retain
                          [3.0, 0.0, 2.0, 0.0]])  # retain
    s, fi, ri = spec.selectivity_topk(means, [0], [1, 2], 1)
    # centroid = [2, 0, 1, 1]; S = [-2, 5, 0, -1]
    assert s.tolist() == [[-2.0, 5.0, 0.0, -1.0]]
    assert fi.tolist() == [[1]] and ri.tolist() == [[0]]


def test_selectivity_centroid_is_unweighted_mean_of_class_means():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(6, 50, generator=g)
    s, fi, ri = spec.selectivity_topk(means, [1, 4], [0, 2, 3, 5], 7)
    cen = means[[0, 2, 3, 5]].double().mean(0)
    for row, c in enumerate([1, 4]):
        sn = (means[c].double() - cen).numpy()
        np.testing.assert_allclose(s[row].numpy(), sn, atol=1e-6)
        assert set(fi[row].tolist()) == set(np.argsort(-sn)[:7].tolist())
        assert set(ri[row].tolist()) == set(np.argsort(sn)[:7].tolist())


def _tv_numpy(x):
    x = x.astype(np.float64)
    b, c, h, w = x.shape
    total = np.zeros(b)
    for i in range(h - 1):
        for j in range(w - 1):
            dx = x[:, :, i + 1, j] - x[:, :, i, j]
            dy = x[:, :, i, j + 1] - x[:, :, i, j]
            total += np.sqrt(dx**2 + dy**2 + spec.TV_EPS).sum(1)
    return total.mean()


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 5, 7), (2, 3, 8, 8)])
def test_tv_loss_matches_loop(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    assert float(spec.tv_loss(x)) == pytest.approx(_tv_numpy(x.numpy()), rel=1e-5)


def test_tv_loss_constant_image_is_only_eps_and_gradient_finite():
    x = torch.zeros(2, 1, 4, 4, requires_grad=True)
    v = spec.tv_loss(x)
    assert float(v) == pytest.approx(9 * np.sqrt(spec.TV_EPS))
    v.backward()
    assert torch.isfinite(x.grad).all()


def test_selective_loss_matches_numpy():
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(4, 10, generator=g), torch.randn(4, 2, 3, 3, generator=g)]
    fi = [torch.tensor([1, 2]), torch.tensor([0, 5, 17])]
    ri = [torch.tensor([7, 8]), torch.tensor([4, 3, 9])]
    alpha = 1.5
    exp = 0.0
    for f, a, b in zip(feats, fi, ri):
        fn = f.reshape(4, -1).double().numpy()
        exp += (fn[:, a.numpy()].mean(1) - alpha * fn[:, b.numpy()].mean(1)).mean()
    exp /= 2
    assert float(spec.selective_loss(feats, fi, ri, alpha)) == pytest.approx(exp, rel=1e-6)


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 12, generator=g)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    assert float(spec.linear_cka(x, x)) == pytest.approx(1.0, abs=1e-10)
    assert float(spec.linear_cka(x, 3.0 * x @ q)) == pytest.approx(1.0, abs=1e-9)
    y = torch.randn(40, 5, generator=g)
    xc = x.double().numpy() - x.double().numpy().mean(0)
    yc = y.double().numpy() - y.double().numpy().mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T
    exp = (kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum())
    assert float(spec.linear_cka(x, y)) == pytest.approx(exp, rel=1e-9)

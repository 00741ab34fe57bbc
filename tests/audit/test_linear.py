import numpy as np
import pytest
import torch

from cnr_fast.audit.linear import Standardizer, fit_linear_svm, fit_logreg


@pytest.mark.parametrize("C", [1.0, 0.05])
def test_logreg_matches_sklearn(blobs, C):
    LogisticRegression = pytest.importorskip("sklearn.linear_model").LogisticRegression
    StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler
    xtr, ytr, xte, _ = blobs
    sc = StandardScaler().fit(xtr)
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(sc.transform(xtr), ytr)
    ours = fit_logreg(xtr, ytr, C=C, tol=1e-9, max_iter=2000, dtype=torch.float64)
    assert (ours.predict(xte).numpy() == ref.predict(sc.transform(xte))).mean() >= 0.99
    # same optimum: sklearn's multinomial coefficients are identified (L2), ours too
    np.testing.assert_allclose(ours.weight.numpy(), ref.coef_, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(ours.bias.numpy(), ref.intercept_, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("n_classes", [4, 2])
def test_linear_svm_matches_sklearn(blobs, n_classes):
    LinearSVC = pytest.importorskip("sklearn.svm").LinearSVC
    StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler
    xtr, ytr, xte, yte = blobs
    keep, keep_te = ytr < n_classes, yte < n_classes
    xtr, ytr, xte, yte = xtr[keep], ytr[keep], xte[keep_te], yte[keep_te]
    sc = StandardScaler().fit(xtr)
    ref = LinearSVC(C=0.1, max_iter=100000, tol=1e-10).fit(sc.transform(xtr), ytr)
    ours = fit_linear_svm(xtr, ytr, C=0.1, tol=1e-10, max_iter=3000, dtype=torch.float64)
    assert (ours.predict(xte).numpy() == ref.predict(sc.transform(xte))).mean() >= 0.98
    w = ours.weight.numpy()[1:] if n_classes == 2 else ours.weight.numpy()
    np.testing.assert_allclose(w, ref.coef_, atol=5e-3, rtol=5e-3)


def test_standardizer_constant_column():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    z = Standardizer.fit(x)(x)
    assert torch.isfinite(z).all() and torch.equal(z[:, 1], torch.zeros(2))


def test_single_class_does_not_crash():
    m = fit_logreg(np.ones((5, 3), np.float32), np.zeros(5, int))
    assert (m.predict(np.zeros((2, 3), np.float32)) == 0).all()

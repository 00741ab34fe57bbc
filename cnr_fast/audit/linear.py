"""Linear decoders solved in torch with full-batch L-BFGS: the same objectives as scikit-learn's.

Why not scikit-learn itself: on 2000 x ~1000 features its lbfgs / liblinear solvers took 1-5 s per
fit on these 2 cores, and the audit fits ~20 of them per model. The objectives below are
scikit-learn's (tests compare predictions with `LogisticRegression` and `LinearSVC`), written as a
mean over examples so the L-BFGS tolerances do not depend on N:

* `fit_logreg`: multinomial logistic regression, mean cross-entropy + ||W||^2 / (2 C N), intercept
  not penalised (sklearn `LogisticRegression(C=C)`, lbfgs, multinomial).
* `fit_linear_svm`: one-vs-rest squared hinge, mean over examples of sum over classes of
  max(0, 1 - s_ik (w_k.x_i + b_k))^2 + (||W||^2 + ||b||^2) / (2 C N), intercept penalised like
  liblinear's (sklearn `LinearSVC(C=C)`, squared_hinge, l2, intercept_scaling=1).

Features are standardised first with statistics of the fitting set (`Standardizer`); that is an
affine map, so it changes only conditioning and the effective regularisation, and the same fitted
map travels with the decoder when it is applied to another model's features (transfer probe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _t(x, dtype=torch.float32) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.to(dtype)


@dataclass
class Standardizer:
    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, x) -> Standardizer:
        x = _t(x)
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        # constant features (dead units): leave them at 0 instead of dividing by 0
        return cls(mean, torch.where(std > 1e-8, std, torch.ones_like(std)))

    def __call__(self, x) -> torch.Tensor:
        return (_t(x) - self.mean) / self.scale


@dataclass
class LinearModel:
    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    classes: torch.Tensor  # (K,) labels the K outputs stand for
    scaler: Standardizer | None = None

    def decision(self, x) -> torch.Tensor:
        x = self.scaler(x) if self.scaler is not None else _t(x, self.weight.dtype)
        return x.to(self.weight.dtype) @ self.weight.T + self.bias

    def predict(self, x) -> torch.Tensor:
        return self.classes[self.decision(x).argmax(1)]


def _minimise(xs, out_dim: int, loss_of, max_iter: int, tol: float, solve: bool = True):
    """L-BFGS from zero weights (out_dim, d) and bias (out_dim,) on loss_of(w, b); returns them detached."""
    w = torch.zeros(out_dim, xs.shape[1], dtype=xs.dtype, requires_grad=True)
    b = torch.zeros(out_dim, dtype=xs.dtype, requires_grad=True)

    def closure():
        w.grad = b.grad = None
        loss = loss_of(w, b)
        loss.backward()
        return loss

    if solve:
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                                history_size=20, line_search_fn="strong_wolfe")
        opt.step(closure)
    return w.detach(), b.detach()


def _prepare(x, y, standardize: bool, dtype):
    """Shared by both fits: (scaler or None, scaled features, sorted classes, labels as class indices)."""
    scaler = Standardizer.fit(x) if standardize else None
    xs = (scaler(x) if scaler else _t(x)).to(dtype)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    classes, yi = torch.unique(y, return_inverse=True)
    return scaler, xs, classes, yi


def fit_logreg(x, y, *, C: float = 1.0, max_iter: int = 300, tol: float = 1e-6, standardize: bool = True,
               dtype=torch.float32) -> LinearModel:
    """Multinomial logistic regression (see the module docstring for the exact objective)."""
    scaler, xs, classes, yi = _prepare(x, y, standardize, dtype)
    n = xs.shape[0]
    k = len(classes)
    lam = 1.0 / (2.0 * C * n)
    w, b = _minimise(xs, k, lambda w, b: F.cross_entropy(xs @ w.T + b, yi) + lam * w.square().sum(),
                     max_iter, tol, solve=k > 1)
    return LinearModel(w, b, classes, scaler)


def fit_linear_svm(x, y, *, C: float = 1.0, max_iter: int = 500, tol: float = 1e-6, standardize: bool = True,
                   dtype=torch.float32) -> LinearModel:
    """One-vs-rest linear SVM with the squared hinge (see the module docstring)."""
    scaler, xs, classes, yi = _prepare(x, y, standardize, dtype)
    n = xs.shape[0]
    k = len(classes)
    binary = k == 2  # sklearn fits one hyperplane for two classes (positive = classes[1])
    kk = 1 if binary else k
    sign = (F.one_hot(yi, k).to(dtype) * 2 - 1)
    sign = sign[:, 1:] if binary else sign
    lam = 1.0 / (2.0 * C * n)

    def loss(w, b):
        margin = 1 - sign * (xs @ w.T + b)
        return margin.clamp(min=0).square().sum(1).mean() + lam * (w.square().sum() + b.square().sum())

    w, b = _minimise(xs, kk, loss, max_iter, tol, solve=k > 1)
    if binary:  # two outputs whose argmax is the sign of the one hyperplane
        w = torch.cat([torch.zeros_like(w), w])
        b = torch.cat([torch.zeros_like(b), b])
    return LinearModel(w, b, classes, scaler)

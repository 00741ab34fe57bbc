"""Decoders on frozen tap features: linear probe (recovery, transfer, few-shot), k-NN, linear SVM.

Every decoder is fitted on the probe-train features (all classes, forget included) and scored on the
test features. The headline number is the accuracy on the forget-class test examples (the share of
them the decoder labels with their true, forget, label); the overall test accuracy comes with it.
"""

from __future__ import annotations

import numpy as np
import torch

from .linear import LinearModel, fit_linear_svm, fit_logreg
from .neighbors import knn_predict

PROBE_C = 1.0  # sklearn's default C, on standardised features
SVM_C = 1.0
TOL = 1e-4  # L-BFGS gradient tolerance on the mean objective; predictions were stable past it


def _y(y) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y)).long()


def forget_mask(y, forget) -> torch.Tensor:
    return torch.isin(_y(y), torch.as_tensor(list(forget), dtype=torch.long))


def scores(pred, y, forget) -> dict[str, float]:
    """{"forget_acc": accuracy on forget-class examples, "overall_acc": accuracy on all}."""
    pred, y = _y(pred), _y(y)
    ok = pred == y
    f = forget_mask(y, forget)
    return {
        "forget_acc": float(ok[f].float().mean()) if f.any() else float("nan"),
        "overall_acc": float(ok.float().mean()) if len(y) else float("nan"),
    }


def linear_probe(train_x, train_y, test_x, test_y, forget, *, C: float = PROBE_C) -> tuple[dict, LinearModel]:
    """Recovery probe: multinomial logistic regression on the audited model's own features."""
    probe = fit_logreg(train_x, train_y, C=C, tol=TOL)
    return scores(probe.predict(test_x), test_y, forget), probe


def transfer_probe(probe: LinearModel, test_x, test_y, forget) -> dict:
    """A probe fitted on another (the original) model's features, applied unchanged (its own
    standardisation included) to these features. Needs the same feature dimension."""
    test_x = torch.as_tensor(np.asarray(test_x)) if isinstance(test_x, np.ndarray) else test_x
    if test_x.shape[1] != probe.weight.shape[1]:
        return {"forget_acc": float("nan"), "overall_acc": float("nan")}
    return scores(probe.predict(test_x), test_y, forget)


def fewshot_indices(train_y, forget, n: int, seed: int = 0) -> torch.Tensor:
    """Probe-train indices keeping every retain example and n (seeded choice) of each forget class."""
    y = _y(train_y)
    g = torch.Generator().manual_seed(seed)
    keep = [torch.nonzero(~forget_mask(y, forget)).flatten()]
    for c in forget:
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(keep).sort().values


def fewshot_probe(train_x, train_y, test_x, test_y, forget, n: int, *, seed: int = 0, C: float = PROBE_C) -> dict:
    """Recovery probe fitted with only n forget examples per forget class in probe-train."""
    idx = fewshot_indices(train_y, forget, n, seed)
    tx = train_x[idx.numpy()] if isinstance(train_x, np.ndarray) else train_x[idx]
    return linear_probe(tx, _y(train_y)[idx], test_x, test_y, forget, C=C)[0]


def knn_decoder(train_x, train_y, test_x, test_y, forget, *, k: int = 5, **kw) -> dict:
    return scores(knn_predict(train_x, train_y, test_x, k, **kw), test_y, forget)


def svm_decoder(train_x, train_y, test_x, test_y, forget, *, C: float = SVM_C) -> dict:
    svm = fit_linear_svm(train_x, train_y, C=C, tol=TOL, max_iter=200)
    return scores(svm.predict(test_x), test_y, forget)

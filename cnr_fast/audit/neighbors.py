"""The k-NN decoder (k=5) and nearest-neighbour purity (k=10) on an exact Euclidean search.

The search is the op `knn_indices` (ops/knn.py: chunked torch or faiss, chosen by the op dispatcher
like every op, shown by `cnr-fast doctor`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..ops import knn as _knn
from ..ops.backend import call


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


def knn_indices(query, base, k: int, *, backend: str = "auto", chunk: int = 1024, exclude_self: bool = False):
    """Indices (Q, k) of the k nearest rows of `base` for every row of `query`, nearest first.

    backend: "auto" (the op dispatcher decides; CNR_FAST_BACKEND applies), or "torch" / "faiss" to run
    that implementation (benchmarks and tests)."""
    query, base = _t(query).float(), _t(base).float()
    kk = min(k + int(exclude_self), base.shape[0])
    fns = {"auto": lambda *a, **kw: call("knn_indices", *a, **kw), "torch": _knn.knn_torch, "faiss": _knn.knn_faiss}
    if backend not in fns:
        raise ValueError(f"backend {backend!r}: choose auto, torch or faiss")
    idx = fns[backend](query, base, kk, chunk=chunk)
    if exclude_self:  # query == base: drop each row's own index
        rows = torch.arange(idx.shape[0]).unsqueeze(1)
        keep = idx != rows
        idx = torch.stack([r[m][:k] for r, m in zip(idx, keep)]) if len(idx) else idx[:, :k]
    return idx


def knn_predict(train_x, train_y, test_x, k: int = 5, **kw) -> torch.Tensor:
    """Majority vote of the k nearest training labels; ties go to the smallest label (as sklearn's
    KNeighborsClassifier with uniform weights)."""
    train_y = torch.as_tensor(np.asarray(train_y)).long()
    idx = knn_indices(test_x, train_x, k, **kw)
    labels = train_y[idx]
    n_cls = int(train_y.max()) + 1
    votes = torch.zeros(labels.shape[0], n_cls).scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float))
    return votes.argmax(1)  # first maximum = smallest tied label


def nn_purity(train_x, train_y, query_x, query_y, k: int = 10, **kw) -> float:
    """Mean over queries of the share of their k nearest training examples that carry the query's label.

    In the audit the queries are the forget-class test examples, so this is the share of forget-labelled
    neighbours; its chance level is the forget class's share of the training (probe-train) set.
    """
    train_y = torch.as_tensor(np.asarray(train_y)).long()
    query_y = torch.as_tensor(np.asarray(query_y)).long()
    if len(query_y) == 0:
        return float("nan")
    idx = knn_indices(query_x, train_x, k, **kw)
    return float((train_y[idx] == query_y.unsqueeze(1)).float().mean())

"""k-nearest-neighbour search, the k-NN decoder (k=5) and nearest-neighbour purity (k=10).

Search is exact Euclidean, by chunked torch (`||q||^2 - 2 q.b + ||b||^2` then topk) or faiss
(IndexFlatL2; a GPU index with faiss-gpu). `backend="auto"` (the default) chooses from
bench/results/knn_cpu.json (2-core CPU, 2026-11-28): torch is faster for small searches
(1000 x 2000 x 64: 3.5 ms vs faiss 4.2 ms, sklearn 5.2 ms), faiss-cpu for large ones
(10k x 10k x 512: 0.43 s vs torch 0.79 s, sklearn 0.92 s; crossover near 1000 x 2000 x 1024), so
faiss is taken when n_query * n_base * d >= FAISS_MIN_WORK, and always for CUDA tensors when
faiss-gpu is there. faiss is imported lazily, never at package import.
"""

from __future__ import annotations

import numpy as np
import torch


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


FAISS_MIN_WORK = 2e9  # n_query * n_base * d above which faiss-cpu beat torch here (knn_cpu.json)


def knn_indices(query, base, k: int, *, backend: str = "auto", chunk: int = 1024, exclude_self: bool = False):
    """Indices (Q, k) of the k nearest rows of `base` for every row of `query`, nearest first."""
    query, base = _t(query).float(), _t(base).float()
    kk = min(k + int(exclude_self), base.shape[0])
    if backend == "auto":
        big = query.shape[0] * base.shape[0] * base.shape[1] >= FAISS_MIN_WORK
        gpu_faiss = query.is_cuda and hasattr(_faiss(), "StandardGpuResources")
        backend = "faiss" if _faiss() is not None and (gpu_faiss or (big and not query.is_cuda)) else "torch"
    if backend == "faiss":
        faiss = _faiss()
        if faiss is None:
            raise RuntimeError("backend='faiss' but faiss is not importable; use backend='torch'")
        index = faiss.IndexFlatL2(base.shape[1])
        if query.is_cuda and hasattr(faiss, "StandardGpuResources"):  # faiss-gpu
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), query.device.index or 0, index)
        index.add(base.cpu().numpy())
        _, idx = index.search(query.cpu().numpy(), kk)
        idx = torch.from_numpy(idx).long()
    else:
        bn = base.square().sum(1)
        out = []
        for i in range(0, query.shape[0], chunk):
            q = query[i : i + chunk]
            d = q.square().sum(1, keepdim=True) - 2.0 * q @ base.T + bn
            out.append(torch.topk(d, kk, dim=1, largest=False).indices)
        idx = torch.cat(out) if out else torch.empty(0, kk, dtype=torch.long)
    if exclude_self:  # query == base: drop each row's own index
        rows = torch.arange(idx.shape[0]).unsqueeze(1)
        keep = idx != rows
        idx = torch.stack([r[m][:k] for r, m in zip(idx, keep)]) if len(idx) else idx[:, :k]
    return idx


def _faiss():
    try:
        import faiss

        return faiss
    except ImportError:
        return None


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

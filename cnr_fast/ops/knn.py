"""k-nearest-neighbour search, exact Euclidean: the op `knn_indices(query, base, k, chunk)` -> (Q, k)
indices of the nearest rows of `base`, nearest first.

Two implementations, registered with backend.py beside them (so the choice goes through the same
dispatcher as every op, and `cnr-fast doctor` shows it):

- torch: chunked torch (`||q||^2 - 2 q.b + ||b||^2`, then topk), any device;
- faiss: IndexFlatL2 (a GPU index with faiss-gpu), imported lazily, never at package import.

Automatic choice (CNR_FAST_BACKEND unset): faiss for CUDA tensors when faiss-gpu is there, and for CPU
searches with n_query * n_base * d >= FAISS_MIN_WORK, where faiss-cpu measured faster than torch
(bench/results/knn_cpu.json, 2-core CPU: torch 3.5 ms vs faiss 4.2 ms at 1000 x 2000 x 64, faiss
0.43 s vs torch 0.79 s at 10k x 10k x 512; crossover near 1000 x 2000 x 1024). CNR_FAST_BACKEND=faiss
forces faiss wherever it imports.
"""

from __future__ import annotations

import torch

from .backend import Backend, always, register, requested

FAISS_MIN_WORK = 2e9  # n_query * n_base * d above which faiss-cpu beat torch here (knn_cpu.json)


def knn_torch(query: torch.Tensor, base: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    bn = base.square().sum(1)
    out = []
    for i in range(0, query.shape[0], chunk):
        q = query[i : i + chunk]
        d = q.square().sum(1, keepdim=True) - 2.0 * q @ base.T + bn
        out.append(torch.topk(d, k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def knn_faiss(query: torch.Tensor, base: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    faiss = _faiss()
    if faiss is None:
        raise RuntimeError("faiss is not importable; install faiss-cpu or use the torch search")
    index = faiss.IndexFlatL2(base.shape[1])
    if query.is_cuda and hasattr(faiss, "StandardGpuResources"):  # faiss-gpu
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), query.device.index or 0, index)
    index.add(base.detach().cpu().numpy())
    _, idx = index.search(query.detach().cpu().numpy(), k)
    return torch.from_numpy(idx).long()


def _faiss():
    try:
        import faiss

        return faiss
    except ImportError:
        return None


def faiss_reasons(query=None, base=None, k=None, chunk: int = 1024) -> list[str]:
    """Why faiss does not run this search ([] = it does); with no arguments, the machine only."""
    faiss = _faiss()
    if faiss is None:
        return ["faiss is not importable (pip install faiss-cpu)"]
    if query is None or requested() != "auto":
        return []
    if query.is_cuda:
        return [] if hasattr(faiss, "StandardGpuResources") else ["CUDA tensors and no faiss-gpu: torch searches on the GPU"]
    work = query.shape[0] * base.shape[0] * base.shape[1]
    if work < FAISS_MIN_WORK:
        return [f"n_query * n_base * d = {work:.2g} < {FAISS_MIN_WORK:.0e}: torch measured faster "
                "(bench/results/knn_cpu.json)"]
    return []


register("knn_indices", Backend("torch", "cnr_fast.ops.knn:knn_torch", always))
register("knn_indices", Backend("faiss", "cnr_fast.ops.knn:knn_faiss", faiss_reasons))

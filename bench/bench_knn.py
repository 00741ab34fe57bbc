"""k-NN search for the audit (k-NN decoder, nearest-neighbour purity): which backend, at which size.

Workloads: base = probe-train features (n_base x d), queries = test features (n_query x d), k = 10,
exact Euclidean. Compared in one run: sklearn KNeighborsClassifier.kneighbors (brute), faiss
IndexFlatL2 (CPU, or GPU with faiss-gpu), and the chunked torch path of cnr_fast.audit.neighbors
(on the given device). Every backend's indices are checked against the torch float64 result.

    python -m bench.bench_knn [--device cuda] [--out DIR]
"""

from __future__ import annotations

import argparse

import torch

from bench.harness import measure_all, write_results
from cnr_fast.audit.neighbors import knn_indices

SIZES = [(2000, 1000, 64), (2000, 1000, 1024), (10000, 10000, 512)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    dev = args.device
    results = []
    for n_base, n_query, d in SIZES:
        g = torch.Generator().manual_seed(0)
        base, query = torch.randn(n_base, d, generator=g), torch.randn(n_query, d, generator=g)
        exact = torch.cdist(query.double(), base.double()).topk(10, largest=False).indices
        row = {"n_base": n_base, "n_query": n_query, "d": d, "k": 10}
        bq, qq = base.to(dev), query.to(dev)
        fns = {"torch": lambda: knn_indices(qq, bq, 10, backend="torch")}
        row["torch_agree"] = float((knn_indices(qq, bq, 10, backend="torch").cpu() == exact).float().mean())
        row["faiss"] = row["sklearn"] = None
        try:
            import faiss  # noqa: F401

            fns["faiss"] = lambda: knn_indices(qq, bq, 10, backend="faiss")
            row["faiss_agree"] = float((knn_indices(qq, bq, 10, backend="faiss").cpu() == exact).float().mean())
        except ImportError:
            pass
        try:
            from sklearn.neighbors import NearestNeighbors

            nnm = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(base.numpy())
            fns["sklearn"] = lambda: nnm.kneighbors(query.numpy())
        except ImportError:
            pass
        row.update(measure_all(fns, device=dev, reps=args.reps))  # interleaved: one load for all
        for other in ("faiss", "sklearn"):
            if row.get(other):
                row[f"torch_speedup_vs_{other}"] = row[other]["median_s"] / row["torch"]["median_s"]
        results.append(row)
        print({k: (v["median_s"] if isinstance(v, dict) else v) for k, v in row.items()})
    path = write_results(f"knn_{torch.device(dev).type}", {"workloads": results}, args.out, device=dev)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cost model that picks the path of a batched CKA call (ops/cka.py): FLOPs plus bytes moved for the
feature form and the Gram form, per pair with pairs="diag", per call with pairs="all"; the native Gram is a
candidate only where it measured >= MIN_NATIVE_SPEEDUP times faster than the torch Gram."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .cka_native import MAX_NATIVE_N, cka_matrix_native, native_reasons
from .cka_torch import check_args, cka_matrix_feature, cka_matrix_torch

# Torch Gram time over native Gram time, measured by bench/bench_cka.py (N = 1000, 5 + 5 CNN taps,
# float32, all pairs, unbiased: `ratios.native_gram_speedup` in its JSON), per device type. The
# native op is chosen automatically only where this is >= MIN_NATIVE_SPEEDUP; a device type not
# listed (not measured) never gets it automatically.
#   cpu: 1.48x in bench/results/cka_cpu.json (AMD EPYC, 1 thread, 2 cores shared with other jobs,
#        load ~5; 1.47x with 2 threads before): under 1.5x, so the CPU dispatch uses the torch Gram.
#        Same run, other shapes: 0.98x (N = 500, D = 4096), 1.65x (N = 2000), 2.2x (N = 6000, D = 512,
#        where the feature form is 9x faster still).
#   cuda: not measured with the cost dispatch; the cuBLAS Gram + float64 chunk copies were at parity
#         with the torch Gram (issue #9): not chosen until `bench/gpu_suite.sh 2` says otherwise.
NATIVE_GRAM_SPEEDUP: dict[str, float] = {"cpu": 1.48}
MIN_NATIVE_SPEEDUP = 1.5
# FLOP-equivalents per byte moved in the cost model (a CPU core's or an H100's FLOP rate over its
# memory bandwidth, roughly 5-15): the Gram form writes and rereads N^2 values per tap.
BYTE_COST = 8.0


def _dims(fs) -> list[int]:
    return [math.prod(t.shape[1:]) for t in fs]


def _elem(feats_a, feats_b) -> int:
    return 8 if any(t.dtype == torch.float64 for t in list(feats_a) + list(feats_b)) else 4


def cost_gram(n: int, da: Sequence[int], db: Sequence[int], npairs: int, elem: int = 4) -> float:
    """Modelled cost (FLOP-equivalents) of the Gram form: a GEMM per tap (2 N^2 D), a product per
    pair and per tap (2 N^2 each), N^2 values written, copied and reread per tap, inputs read."""
    taps = len(da) + len(db)
    flops = 2.0 * n * n * (sum(da) + sum(db)) + 2.0 * n * n * (npairs + taps)
    nbytes = elem * (4.0 * n * n * taps + 2.0 * n * (sum(da) + sum(db)))
    return flops + BYTE_COST * nbytes


def cost_feature(n: int, da: Sequence[int], db: Sequence[int], pair_list, elem: int = 4) -> float:
    """Modelled cost of the feature form: 2 N D_a D_b per pair, 2 N D^2 per tap, the D x D products
    written and reread, each GEMM reading its inputs."""
    flops = sum(2.0 * n * da[a] * db[b] for a, b in pair_list) + sum(2.0 * n * d * d for d in list(da) + list(db))
    out = sum(float(da[a]) * db[b] for a, b in pair_list) + sum(float(d) * d for d in list(da) + list(db))
    reads = sum(n * float(da[a] + db[b]) for a, b in pair_list) + sum(2.0 * n * d for d in list(da) + list(db))
    return flops + BYTE_COST * elem * (3.0 * out + reads)


def native_gram_speedup(device) -> float | None:
    """Measured native-over-torch Gram speedup on this device type (None: never measured)."""
    return NATIVE_GRAM_SPEEDUP.get(getattr(device, "type", str(device).split(":")[0]))


def native_policy_reasons(device, n: int) -> list[str]:
    """Why the automatic choice does not consider the native Gram here ([] = it does)."""
    why = []
    dev = getattr(device, "type", str(device).split(":")[0])
    s = native_gram_speedup(device)
    if s is None:
        why.append(f"native Gram not measured faster than the torch Gram on {dev} (NATIVE_GRAM_SPEEDUP)")
    elif s < MIN_NATIVE_SPEEDUP:
        why.append(f"native Gram measured {s:.2f}x the torch Gram on {dev}, under {MIN_NATIVE_SPEEDUP}x (bench/bench_cka.py)")
    if n > MAX_NATIVE_N:
        why.append(f"N={n} > {MAX_NATIVE_N}: N x N Grams too large for the native op")
    return why


@dataclass
class Plan:
    """What `cka_matrix` runs: `path` "feature", "gram" or "native", or "feature+gram" /
    "feature+native" with pairs="diag" (feature_pairs in feature space, the others on the Gram
    engine). costs: modelled cost of the whole call on each single path; native_reasons: why the
    native Gram was not a candidate ([] = it was)."""

    path: str
    gram_engine: str  # "gram" (torch) or "native"
    feature_pairs: tuple[int, ...] = ()
    gram_pairs: tuple[int, ...] = ()
    costs: dict[str, float] = field(default_factory=dict)
    native_reasons: list[str] = field(default_factory=list)


def plan(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> Plan:
    """Choose the path of a cka_matrix call by cost (no computation on the tensors)."""
    diag = check_args(feats_a, feats_b, unbiased, pairs)
    n = feats_a[0].shape[0]
    da, db = _dims(feats_a), _dims(feats_b)
    elem = _elem(feats_a, feats_b)
    why = native_reasons(feats_a, feats_b, unbiased, pairs) + native_policy_reasons(feats_a[0].device, n)
    speedup = native_gram_speedup(feats_a[0].device) or 1.0
    engine = "gram" if why else "native"
    pair_list = [(t, t) for t in range(len(da))] if diag else [(a, b) for a in range(len(da)) for b in range(len(db))]
    costs = {"feature": cost_feature(n, da, db, pair_list, elem), "gram": cost_gram(n, da, db, len(pair_list), elem)}
    costs["native"] = costs["gram"] / speedup
    g = costs[engine]
    if not diag:
        path = "feature" if costs["feature"] < g else engine
        fp = tuple(range(len(pair_list))) if path == "feature" else ()
        return Plan(path, engine, fp, tuple(sorted(set(range(len(pair_list))) - set(fp))), costs, why)
    fp, gp = [], []
    for t in range(len(da)):  # each (t, t) pair on its own cheaper form
        f = cost_feature(n, [da[t]], [db[t]], [(0, 0)], elem)
        gc = cost_gram(n, [da[t]], [db[t]], 1, elem) / (speedup if engine == "native" else 1.0)
        (fp if f < gc else gp).append(t)
    path = "feature" if not gp else engine if not fp else f"feature+{engine}"
    return Plan(path, engine, tuple(fp), tuple(gp), costs, why)


PATHS = {"feature": cka_matrix_feature, "gram": cka_matrix_torch}


def _path_fn(name: str):
    return cka_matrix_native if name == "native" else PATHS[name]


def run_plan(p: Plan, feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    if "+" not in p.path:
        return _path_fn(p.path)(list(feats_a), list(feats_b), unbiased=unbiased, pairs=pairs)
    parts = {}
    for name, idx in (("feature", p.feature_pairs), (p.gram_engine, p.gram_pairs)):
        parts[name] = (idx, _path_fn(name)([feats_a[t] for t in idx], [feats_b[t] for t in idx], unbiased=unbiased,
                                           pairs="diag"))
    out = parts["feature"][1].new_empty(len(feats_a))
    for idx, vals in parts.values():
        out[list(idx)] = vals.to(out.device)
    return out

"""Batched linear CKA between every tap of model A and every tap of model B, in one go.

    cka_matrix(feats_a, feats_b, unbiased=False, pairs="all") -> (T_a, T_b) float64
    cka_matrix(feats_a, feats_b, pairs="diag")                -> (T,) float64: only (t, t) pairs

feats_*: lists of (N, ...) activations on the same N examples, flattened to (N, D_t), centred.
CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = Xc Xc^T, L = Yc Yc^T.

* unbiased=False: the biased estimator, equal to `spec.linear_cka` (Kornblith et al. 2019).
* unbiased=True: the unbiased HSIC U-statistic (Song et al. 2012; Nguyen et al. 2020 eq. 3) that
  pytorch-cka 1.1.3 (`cka.cka_from_features`) and torch-cka 0.21 (`CKA._HSIC`) use. Unlike
  pytorch-cka we do not clamp to [0, 1] (a negative value is the estimator saying "unrelated") and
  a zero or negative denominator gives NaN, not x / 1e-6. Needs N >= 4.

Three paths compute the same numbers:

* "gram" (`cka_matrix_torch`, pure torch): every tap's N x N Gram once, all pairs from the Grams.
  Cost ~ 2 N^2 sum(D_t) FLOP plus N^2 bytes per tap: the right form when the taps are wide (D > N).
* "feature" (`cka_matrix_feature`, pure torch): the D_a x D_b cross-covariances,
  <K, L>_F = ||Xc^T Yc||_F^2; with centred features K 1 = 0, so the unbiased terms need only the
  row norms k = diag(K): tr(K~ L~) = <K, L> - k.l, 1^T K~ 1 = -sum(k), 1^T K~ L~ 1 = k.l.
  Cost ~ 2 N (D_a D_b + D_a^2 + D_b^2) per pair: the right form when N > D (10-20x cheaper at
  N = 10k, D = 512).
* "native" (`cka_matrix_native`, cnr_fast._C from csrc/): the Gram form in C++/OpenMP (staircase
  BLAS Grams, fused float64 reductions) on CPU, cuBLAS + kernels on CUDA; a torch custom op
  `torch.ops.cnr_fast.cka_matrix` with a fake kernel (safe under torch.compile), no backward.

`cka_matrix` picks by a cost model (`plan`): FLOPs plus bytes moved for each form, per pair with
pairs="diag" (early wide taps on the Gram form, late narrow ones in feature space), per call with
pairs="all". The native Gram is a candidate only on devices where it measured >= MIN_NATIVE_SPEEDUP
times faster than the torch Gram (NATIVE_GRAM_SPEEDUP, from bench/bench_cka.py): elsewhere it is
not chosen automatically. Every call goes through `backend.call` (so `cnr-fast doctor` shows the
choice): "native" when the native Gram alone is cheapest, else "planned" (the plan above);
CNR_FAST_BACKEND=native / planned / torch forces one; "torch" is the torch Gram form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .. import _native
from .backend import Backend, always, call, register, requested

# Beyond this many examples the native op's N x N Grams stop fitting comfortably in memory.
MAX_NATIVE_N = 32768

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


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _check(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], unbiased: bool, pairs: str) -> bool:
    """Validate the arguments; return diag (pairs == "diag")."""
    if pairs not in ("all", "diag"):
        raise ValueError(f"pairs must be 'all' or 'diag', got {pairs!r}")
    if isinstance(feats_a, torch.Tensor) or isinstance(feats_b, torch.Tensor):
        raise TypeError("feats_a and feats_b are lists of tensors (one per tap); wrap a single tensor in [ ]")
    if len(feats_a) == 0 or len(feats_b) == 0:
        raise ValueError("feats_a and feats_b need at least one tap each")
    diag = pairs == "diag"
    if diag and len(feats_a) != len(feats_b):
        raise ValueError(f"pairs='diag' needs as many taps in A ({len(feats_a)}) as in B ({len(feats_b)})")
    n = feats_a[0].shape[0] if feats_a[0].dim() > 0 else 0
    dev = feats_a[0].device
    for t in list(feats_a) + list(feats_b):
        if t.dim() < 1 or t.shape[0] != n:
            raise ValueError(f"every tap must be (N, ...) with the same N; got shapes {t.shape} and N={n}")
        if t.device != dev:
            raise ValueError(f"all taps must be on one device; got {t.device} and {dev}")
        if not t.is_floating_point():
            raise TypeError(f"taps must be floating point, got {t.dtype}")
        if math.prod(t.shape[1:]) == 0:
            raise ValueError(f"a tap has no features: shape {tuple(t.shape)}")
    need = 4 if unbiased else 2
    if n < need:
        raise ValueError(f"{'unbiased' if unbiased else 'biased'} CKA needs N >= {need} examples, got {n}")
    return diag


# ----------------------------------------------------------------------------------------------
# Native op, seen by torch as cnr_fast::cka_matrix


@torch.library.custom_op("cnr_fast::cka_matrix", mutates_args=())
def _cka_matrix_op(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], unbiased: bool, diag: bool) -> torch.Tensor:
    return _native.require().cka_matrix(list(feats_a), list(feats_b), unbiased, diag)


@_cka_matrix_op.register_fake
def _(feats_a, feats_b, unbiased, diag):
    shape = (len(feats_a),) if diag else (len(feats_a), len(feats_b))
    return feats_a[0].new_empty(shape, dtype=torch.float64)


def native_reasons(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> list[str]:
    """Why the native backend cannot run this call ([] = it can)."""
    why = list(_native.reasons(feats_a[0].device)) if len(feats_a) else ["no taps"]
    if torch.is_grad_enabled() and any(t.requires_grad for t in list(feats_a) + list(feats_b)):
        why.append("inputs require grad and the native op has no backward")
    return why


def cka_matrix_native(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    diag = _check(feats_a, feats_b, unbiased, pairs)
    return torch.ops.cnr_fast.cka_matrix(list(feats_a), list(feats_b), unbiased, diag)


# ----------------------------------------------------------------------------------------------
# Pure-torch batched implementation: CPU fallback, test oracle of the native op, differentiable.


def _hsic_unbiased(cross, s_u, s_v, rowdot, n: int):
    # Same formula as csrc/cka/cka_core.h hsic_unbiased (keep the two in step).
    return (cross + s_u * s_v / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rowdot) / (n * (n - 3))


def cka_matrix_torch(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    diag = _check(feats_a, feats_b, unbiased, pairs)
    n = feats_a[0].shape[0]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in list(feats_a) + list(feats_b)) else torch.float32

    def grams(fs):
        gs = []
        for f in fs:
            x = _flat(f).to(dtype)
            x = x - x.mean(0, keepdim=True)  # torch's CPU/CUDA sums are pairwise: no float64 copy needed
            gs.append(x @ x.T)
        g = torch.stack(gs)  # (T, n, n), centred Grams
        if unbiased:  # K~: zero diagonal
            g = g - torch.diag_embed(torch.diagonal(g, dim1=1, dim2=2))
        return g

    ga, gb = grams(feats_a), grams(feats_b)
    # Pair sums over n^2 entries in the Grams' dtype (BLAS / pairwise sums), then float64.
    fa, fb = ga.reshape(len(feats_a), -1), gb.reshape(len(feats_b), -1)
    cross = ((fa * fb).sum(1) if diag else fa @ fb.T).double()
    self_a, self_b = fa.square().sum(1).double(), fb.square().sum(1).double()
    if unbiased:
        ra, rb = ga.sum(2, dtype=torch.float64), gb.sum(2, dtype=torch.float64)  # K~ 1
        sa, sb = ra.sum(1), rb.sum(1)
        if diag:
            cross = _hsic_unbiased(cross, sa, sb, (ra * rb).sum(1), n)
        else:
            cross = _hsic_unbiased(cross, sa[:, None], sb[None, :], ra @ rb.T, n)
        self_a = _hsic_unbiased(self_a, sa, sa, (ra * ra).sum(1), n)
        self_b = _hsic_unbiased(self_b, sb, sb, (rb * rb).sum(1), n)
    # biased: the 1/(n-1)^2 of HSIC cancels in the ratio
    den = self_a * self_b if diag else self_a[:, None] * self_b[None, :]
    ok = den > 0
    return torch.where(ok, cross / torch.where(ok, den, torch.ones_like(den)).sqrt(), torch.full_like(den, float("nan")))


# ----------------------------------------------------------------------------------------------
# Feature-space form (pure torch, differentiable): no N x N matrix anywhere.


def _centred(f: torch.Tensor, dtype) -> torch.Tensor:
    x = _flat(f).to(dtype)
    return x - x.mean(0, keepdim=True)


def _sq_fro(m: torch.Tensor) -> torch.Tensor:
    """||m||_F^2 summed in float64 (the squares are exact enough in m's dtype)."""
    return m.square().sum(dtype=torch.float64)


def cka_matrix_feature(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    """cka_matrix in feature space: ||Xc^T Yc||_F^2 per pair, ||Xc^T Xc||_F^2 per tap.

    With centred features K 1 = 0 and K~ = K - diag(k), k_i = ||Xc_i||^2, so the unbiased HSIC is
    [<K, L> - k.l + sum(k) sum(l) / ((n-1)(n-2)) - 2/(n-2) k.l] / (n(n-3)), <K, L> = ||Xc^T Yc||^2.
    """
    diag = _check(feats_a, feats_b, unbiased, pairs)
    n = feats_a[0].shape[0]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in list(feats_a) + list(feats_b)) else torch.float32
    xa = [_centred(f, dtype) for f in feats_a]
    xb = [_centred(f, dtype) for f in feats_b]
    self_a = torch.stack([_sq_fro(x.T @ x) for x in xa])
    self_b = torch.stack([_sq_fro(y.T @ y) for y in xb])
    if diag:
        cross = torch.stack([_sq_fro(x.T @ y) for x, y in zip(xa, xb)])
    else:
        cross = torch.stack([torch.stack([_sq_fro(x.T @ y) for y in xb]) for x in xa])
    if unbiased:
        ka = torch.stack([x.square().sum(1, dtype=torch.float64) for x in xa])  # (T_a, n) row norms
        kb = torch.stack([y.square().sum(1, dtype=torch.float64) for y in xb])
        sa, sb = ka.sum(1), kb.sum(1)
        c1, c2 = 1.0 / ((n - 1) * (n - 2)), 1.0 + 2.0 / (n - 2)

        def hsic(fro, s_u, s_v, kdot):
            return (fro + s_u * s_v * c1 - c2 * kdot) / (n * (n - 3))

        if diag:
            cross = hsic(cross, sa, sb, (ka * kb).sum(1))
        else:
            cross = hsic(cross, sa[:, None], sb[None, :], ka @ kb.T)
        self_a = hsic(self_a, sa, sa, (ka * ka).sum(1))
        self_b = hsic(self_b, sb, sb, (kb * kb).sum(1))
    den = self_a * self_b if diag else self_a[:, None] * self_b[None, :]
    ok = den > 0
    return torch.where(ok, cross / torch.where(ok, den, torch.ones_like(den)).sqrt(), torch.full_like(den, float("nan")))


# ----------------------------------------------------------------------------------------------
# Cost model and dispatch


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
    diag = _check(feats_a, feats_b, unbiased, pairs)
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


# ----------------------------------------------------------------------------------------------
# Public API


def cka_matrix(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], unbiased: bool = False, pairs: str = "all"
) -> torch.Tensor:
    """Linear CKA of every (tap of A, tap of B) pair: (T_a, T_b) float64, or (T,) with pairs="diag".

    The path (feature space, torch Gram, native Gram) comes from `plan`, by cost; with
    CNR_FAST_BACKEND=native or =torch that backend runs instead (torch = the torch Gram form).

    >>> a = [torch.randn(100, 8, 4, 4), torch.randn(100, 32)]
    >>> cka_matrix(a, a, pairs="diag")  # tensor([1., 1.], dtype=torch.float64)
    """
    _check(feats_a, feats_b, unbiased, pairs)
    return call("cka_matrix", list(feats_a), list(feats_b), unbiased=unbiased, pairs=pairs)


def cka_matrix_planned(feats_a, feats_b, unbiased: bool = False, pairs: str = "all") -> torch.Tensor:
    """The cost model's choice (`plan`): feature space, torch Gram or native Gram for the call, or per
    pair with pairs="diag". The dispatcher's automatic choice for cka_matrix when the native Gram alone
    is not the cheapest (`cnr-fast doctor` shows it as "planned")."""
    return run_plan(plan(feats_a, feats_b, unbiased, pairs), feats_a, feats_b, unbiased, pairs)


# The "native" backend of backend.py's single-pair op linear_cka (same signature as spec.linear_cka).


def linear_cka_native_reasons(x, y) -> list[str]:
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        return ["x and y must be tensors"]
    why = native_reasons([x], [y])
    if x.device != y.device:
        why.append("x and y on different devices")
    if x.dim() < 1 or y.dim() < 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        why.append("needs (N, ...) inputs with the same N >= 2")
    if not (x.is_floating_point() and y.is_floating_point()):
        why.append("needs floating-point inputs")
    if x.dim() >= 1 and x.shape[0] > MAX_NATIVE_N:
        why.append(f"N={x.shape[0]} > {MAX_NATIVE_N}: N x N Grams too large, the spec's feature-space form is better")
    return why


def _cost_reasons(op: str, *args, **kwargs) -> list[str]:
    """Automatic choice only: why the cost model does not pick the native op for this call."""
    try:
        if op == "linear_cka":
            x, y = args[0], args[1]
            if min(x.dim(), y.dim()) < 1 or x.shape[0] < 2:
                return []
            p = plan([x], [y], False, "diag")
            # linear_cka's other backend is the feature-space spec.linear_cka
            if p.native_reasons:
                return list(p.native_reasons)
            return [] if p.costs["native"] <= p.costs["feature"] else ["cost model: the feature-space form is cheaper"]
        p = plan(*args, **kwargs)
    except (TypeError, ValueError, IndexError, AttributeError):
        return []  # the call itself is invalid: the op reports it
    if p.path == "native":
        return []
    return list(p.native_reasons) or [f"cost model: path {p.path!r} is cheaper ({_fmt_costs(p.costs)})"]


def _fmt_costs(costs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2g}" for k, v in costs.items())


def native_reasons_for(op: str, *args, **kwargs) -> list[str]:
    """backend.py's hook. Without arguments (backend.describe / `cnr-fast doctor`): the environment
    only, for tensors on the best device here. With CNR_FAST_BACKEND unset / auto, also the cost
    model's reasons (a slower native path is never chosen automatically); with
    CNR_FAST_BACKEND=native only what makes the op unable to run."""
    if not args and not kwargs:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        why = list(_native.reasons(dev))
        if requested() == "auto":
            why += native_policy_reasons(dev, 0)
        return why
    why = linear_cka_native_reasons(*args, **kwargs) if op == "linear_cka" else native_reasons(*args, **kwargs)
    if not why and requested() == "auto":
        why = _cost_reasons(op, *args, **kwargs)
    return why


def linear_cka_native(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """spec.linear_cka through the native op: a 0-d float64 tensor."""
    return torch.ops.cnr_fast.cka_matrix([x], [y], False, True)[0]


def _native_check(op: str):
    def not_supported_reasons(*args, **kwargs) -> list[str]:
        return native_reasons_for(op, *args, **kwargs)

    not_supported_reasons.__name__ = f"native_{op}_reasons"
    return not_supported_reasons


# This file's backends, beside their kernels: the native library cnr_fast._C (csrc/; C++/OpenMP on CPU,
# CUDA when built with it) for the batched CKA of every tap pair (torch = the torch Gram form
# above) and for the single-pair linear_cka (torch = spec.linear_cka).
register("cka_matrix", Backend("torch", "cnr_fast.ops.cka:cka_matrix_torch", always))
register("cka_matrix", Backend("native", "cnr_fast.ops.cka:cka_matrix_native", _native_check("cka_matrix")))
# between them, the cost model's plan (feature space / Gram / native per pair): what auto runs unless
# the native Gram alone is cheapest for the whole call (then "native", checked first)
register("cka_matrix", Backend("planned", "cnr_fast.ops.cka:cka_matrix_planned", always))
register("linear_cka", Backend("native", "cnr_fast.ops.cka:linear_cka_native", _native_check("linear_cka")))


__all__ = ["MAX_NATIVE_N", "NATIVE_GRAM_SPEEDUP", "Plan", "cka_matrix", "cka_matrix_feature", "cka_matrix_native",
           "cka_matrix_torch", "cost_feature", "cost_gram", "native_reasons", "plan", "run_plan"]

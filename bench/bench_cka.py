"""Benchmark: linear CKA between 5 taps of model A and 5 taps of model B (all 25 pairs).

    python -m bench.bench_cka                       # CPU -> bench/results/cka_cpu.json
    python -m bench.bench_cka --device cuda --out $OUT   # GPU -> $OUT/cka_cuda.json

Workloads (same features, float32, N examples; tap dims of a small CNN: 8x28x28, 16x14x14, 32x7x7,
64x4x4, 64):
  torch_cka_loop   torch-cka 0.21 `CKA.compare`: its per-pair Python loop (recomputes model B's Gram
                   for every pair, HSIC through full N x N products); fed by replay "models" whose
                   taps return the precomputed features, one batch of N. If torch-cka is missing, an
                   equivalent per-pair loop written here (same formula) and labelled so.
  pytorch_cka      pytorch-cka 1.1.3 `cka_from_features`: Grams per tap + one pair-batched einsum.
  native           ours, cnr_fast._C all-pairs (unbiased, the estimator the two above use).
  native_biased    ours, biased estimator (= spec.linear_cka).
  torch_batched    ours, pure-torch fallback (ops/cka.py cka_matrix_torch), unbiased.
Verification (untimed): native (float32 in) vs the pure-torch form on float64 features and vs
pytorch-cka on float64 features (<= 1e-4, after pytorch-cka's [0, 1] clamp); biased vs
spec.linear_cka on the pairs of small taps; reported only: distance to pytorch-cka and
torch-cka fed the float32 features (their uncentred float32 U-statistic loses digits on ReLU data).

Paths and dispatch ("paths" in the JSON): for each shape in PATH_SHAPES, the time of every path of
ops/cka.py (feature = feature space, gram = torch Gram, native = cnr_fast._C Gram) and of
`cka_matrix` itself ("auto"), the path its cost model picked (`plan`), and picked / best, best
being the fastest path the dispatch may pick (the native Gram only where it earned its place;
picked_over_fastest counts it anyway). Targets:
the dispatch never picks a path slower than the best by more than the timing noise
(DISPATCH_SLACK), and the native Gram is chosen automatically on this device only if it measured
>= MIN_NATIVE_SPEEDUP x the torch Gram here (native_gram_speedup, cnn_all shape, same run).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # torch-cka's progress bar

import torch
from torch import nn

from bench.harness import measure, write_results

DIMS = [(8, 28, 28), (16, 14, 14), (32, 7, 7), (64, 4, 4), (64,)]
CNN = [8 * 28 * 28, 16 * 14 * 14, 32 * 7 * 7, 64 * 4 * 4, 64]
# name: (n on CPU, n on CUDA, dims of A, dims of B, pairs, unbiased)
PATH_SHAPES = {
    "cnn_all": (1000, 1000, CNN, CNN, "all", True),  # the workload above: Gram form
    "cnn_diag": (1000, 1000, CNN, CNN, "diag", True),  # per tap: wide taps Gram, the narrow one feature
    "wide_all": (500, 2000, [4096, 2048], [4096], "all", False),  # d >> n: Gram
    "mid_all": (2000, 4000, [1024, 256], [768], "all", False),  # near the crossover
    "narrow_diag": (6000, 10000, [512, 256], [512, 256], "diag", True),  # n >> d (issue #9): feature
}
DISPATCH_SLACK = 1.25  # picked / best above this = the dispatch chose a slower path
SLOW_COST = 4.0  # paths modelled this much dearer than the cheapest are timed once


def make_features(n: int, device: str, seed: int = 0):
    """ReLU activations of two 'models' that see the same 64-d latent: CKA values spread over (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 64, generator=g)
    out = []
    for _model in range(2):
        taps = []
        for k, shape in enumerate(DIMS):
            d = 1
            for s in shape:
                d *= s
            w = torch.randn(64, d, generator=g) / 8.0
            noise = torch.randn(n, d, generator=g) * (0.5 + 0.5 * k)
            taps.append((z @ w + noise).relu().reshape(n, *shape).to(device))
        out.append(taps)
    return out[0], out[1]


class _Tap(nn.Module):
    def __init__(self, feats: torch.Tensor):
        super().__init__()
        self.feats = feats

    def forward(self, x):
        return self.feats


class _Replay(nn.Module):
    """A 'model' whose taps output precomputed activations, so torch-cka's forward hooks record them."""

    def __init__(self, feats):
        super().__init__()
        self.taps = nn.ModuleList(_Tap(f) for f in feats)

    def forward(self, x):
        for t in self.taps:
            t(x)
        return x


def torch_cka_runner(fa, fb, device):
    """(callable returning the T x T matrix, label)."""
    try:
        import torch_cka
    except ImportError:
        torch_cka = None
    if torch_cka is not None:
        from torch.utils.data import DataLoader, TensorDataset

        n = fa[0].shape[0]
        dl = DataLoader(TensorDataset(torch.zeros(n, 1)), batch_size=n)
        layers = [f"taps.{i}" for i in range(len(fa))]
        c = torch_cka.CKA(_Replay(fa), _Replay(fb), model1_name="A", model2_name="B", model1_layers=layers,
                          model2_layers=layers, device=device)

        def run():
            c.compare(dl, dl)  # resets and refills c.hsic_matrix
            return c.hsic_matrix

        return run, f"torch-cka {getattr(torch_cka, '__version__', '?')} CKA.compare (per-pair Python loop)"

    def hsic(k, l):  # torch-cka 0.21 CKA._HSIC, unbiased (Nguyen et al. eq. 3)
        n = k.shape[0]
        ones = torch.ones(n, 1, device=k.device)
        r = torch.trace(k @ l)
        r += ((ones.t() @ k @ ones @ ones.t() @ l @ ones) / ((n - 1) * (n - 2))).item()
        r -= ((ones.t() @ k @ l @ ones) * 2 / (n - 2)).item()
        return (1 / (n * (n - 3)) * r).item()

    def run():
        out = torch.zeros(len(fa), len(fb))
        for i, x in enumerate(fa):
            x = x.flatten(1)
            k = x @ x.T
            k.fill_diagonal_(0)
            kk = hsic(k, k)
            for j, y in enumerate(fb):
                y = y.flatten(1)
                l = y @ y.T
                l.fill_diagonal_(0)
                out[i, j] = hsic(k, l) / (kk * hsic(l, l)) ** 0.5
        return out

    return run, "per-pair Python loop equivalent to torch-cka 0.21 (torch-cka not installed)"


def _shape_feats(n, dims, device, gen):
    return [(torch.randn(n, d, generator=gen).relu() + 0.1).to(device) for d in dims]


def bench_paths(device: str, rounds: int, reps: int, only=None) -> dict:
    """Per shape: every path's time, the dispatch's pick and its time; see the module docstring."""
    from cnr_fast import _native
    from cnr_fast.ops import cka as ops_cka

    out = {}
    for name, (n_cpu, n_cuda, da, db, pairs, unbiased) in PATH_SHAPES.items():
        if only and name not in only:
            continue
        n = n_cuda if device.startswith("cuda") else n_cpu
        gen = torch.Generator().manual_seed(1)
        fa, fb = _shape_feats(n, da, device, gen), _shape_feats(n, db, device, gen)
        p = ops_cka.plan(fa, fb, unbiased, pairs)
        fns = {"feature": ops_cka.cka_matrix_feature, "gram": ops_cka.cka_matrix_torch}
        if not _native.reasons(device):
            fns["native"] = ops_cka.cka_matrix_native
        fns["auto"] = ops_cka.cka_matrix
        first_s, vals = {}, {}
        with torch.no_grad():
            for k, f in fns.items():  # the check of every path; its (cold) time is kept for the slow ones
                t0 = time.perf_counter()
                v = f(fa, fb, unbiased=unbiased, pairs=pairs)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                first_s[k] = time.perf_counter() - t0
                vals[k] = v.double().cpu()
            want = ops_cka.cka_matrix_torch([t.double() for t in fa], [t.double() for t in fb], unbiased=unbiased,
                                            pairs=pairs).cpu()
        # A path the cost model puts at > SLOW_COST x the cheapest is timed once, by its check run
        # above: its time is on record without spending minutes of a shared CPU on it.
        cheapest = min(p.costs[k] for k in fns if k in p.costs)
        slow = {k for k in fns if p.costs.get(k, 0.0) > SLOW_COST * cheapest}
        per_round = {k: [first_s[k]] if k in slow else [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                if k not in slow:
                    call = functools.partial(f, fa, fb, unbiased=unbiased, pairs=pairs)
                    per_round[k].append(measure(call, device=device, warmup=1, reps=reps)["median_s"])
        med = {k: statistics.median(v) for k, v in per_round.items()}
        paths = {k: v for k, v in med.items() if k != "auto"}
        fastest = min(paths, key=paths.get)
        # the paths the dispatch may pick: the native Gram only where it earned its place on this device
        allowed = {k: v for k, v in paths.items() if k != "native" or not p.native_reasons}
        best = min(allowed, key=allowed.get)
        # a single-path plan is timed as that path (same code); a mixed one only as "auto"
        picked_s = med[p.path] if p.path in med else med["auto"]
        out[name] = {
            "n": n, "dims_a": da, "dims_b": db, "pairs": pairs, "unbiased": unbiased,
            "median_s": med, "round_medians_s": per_round, "timed_once": sorted(slow), "best_path": best, "fastest_path": fastest,
            "picked_path": p.path, "picked_s": picked_s, "auto_s": med["auto"],
            "picked_over_best": picked_s / paths[best], "auto_over_best": med["auto"] / paths[best],
            "picked_over_fastest": picked_s / paths[fastest],
            "plan": {"feature_pairs": list(p.feature_pairs), "gram_pairs": list(p.gram_pairs), "gram_engine": p.gram_engine,
                     "modelled_cost": p.costs, "native_not_candidate_because": p.native_reasons},
            "maxabs_vs_f64_gram": {k: (v - want).abs().max().item() for k, v in vals.items()},
        }
    return out


def bench_baselines(args, device: str) -> dict:
    """The baseline workloads (torch-cka loop, pytorch-cka, ours) at the default shape."""
    try:
        from cka import cka_from_features  # pytorch-cka 1.1.3
    except ImportError:
        cka_from_features = None
        print("pytorch-cka not installed (pip install --no-deps pytorch-cka==1.1.3): its workload is skipped",
              file=sys.stderr)

    from cnr_fast.ops import spec
    from cnr_fast.ops.cka import cka_matrix_native, cka_matrix_torch

    fa, fb = make_features(args.n, device)
    loop, loop_label = torch_cka_runner(fa, fb, device)
    flat_a = [t.flatten(1) for t in fa]
    flat_b = [t.flatten(1) for t in fb]
    workloads = {"torch_cka_loop": (loop, loop_label)}
    if cka_from_features is not None:
        workloads["pytorch_cka"] = (lambda: cka_from_features(flat_a, flat_b),
                                    "pytorch-cka 1.1.3 cka_from_features (all pairs, einsum)")
    workloads.update({
        "native": (lambda: cka_matrix_native(fa, fb, unbiased=True), "cnr_fast._C all pairs, unbiased"),
        "native_biased": (lambda: cka_matrix_native(fa, fb, unbiased=False), "cnr_fast._C all pairs, biased"),
        "torch_batched": (lambda: cka_matrix_torch(fa, fb, unbiased=True), "cnr_fast pure-torch fallback, unbiased"),
    })

    # ---- verify (untimed)
    with torch.no_grad():
        ours = cka_matrix_native(fa, fb, unbiased=True).cpu()
        ours_b = cka_matrix_native(fa, fb, unbiased=False).cpu()
        a64, b64 = [t.double() for t in flat_a], [t.double() for t in flat_b]
        torch64 = cka_matrix_torch(a64, b64, unbiased=True).cpu()
        torch64_b = cka_matrix_torch(a64, b64, unbiased=False).cpu()
        loop_vals = loop().double().cpu()
        # spec.linear_cka (feature-space form, O(N D_a D_b)) on the pairs of small taps only
        small = [i for i, t in enumerate(flat_a) if t.shape[1] <= 1568]
        ref_small = torch.tensor([[spec.linear_cka(flat_a[i].cpu(), flat_b[j].cpu()).item() for j in small]
                                  for i in small], dtype=torch.float64)
    verify = {
        "native_vs_torch_batched_f64_maxabs": (ours - torch64).abs().max().item(),
        "native_biased_vs_torch_batched_f64_maxabs": (ours_b - torch64_b).abs().max().item(),
        "native_biased_vs_reference_linear_cka_small_taps_maxabs": (ours_b[small][:, small] - ref_small).abs().max().item(),
        "native_vs_torch_cka_loop_f32_maxabs": (ours - loop_vals).abs().max().item(),
        "cka_unbiased": ours.tolist(),
    }
    ok = (verify["native_vs_torch_batched_f64_maxabs"] <= 1e-4
          and verify["native_biased_vs_torch_batched_f64_maxabs"] <= 1e-5
          and verify["native_biased_vs_reference_linear_cka_small_taps_maxabs"] <= 1e-5)
    if cka_from_features is not None:
        with torch.no_grad():
            theirs64 = cka_from_features(a64, b64).cpu()
            theirs32 = cka_from_features(flat_a, flat_b).double().cpu()
        # pytorch-cka clamps to [0, 1]: compare after the same clamp
        verify["native_vs_pytorch_cka_f64_maxabs"] = (ours.clamp(0, 1) - theirs64).abs().max().item()
        verify["native_vs_pytorch_cka_f32_maxabs"] = (ours.clamp(0, 1) - theirs32).abs().max().item()
        verify["pytorch_cka_f32_vs_its_f64_maxabs"] = (theirs32 - theirs64).abs().max().item()
        ok = ok and verify["native_vs_pytorch_cka_f64_maxabs"] <= 1e-4
    verify["ok"] = ok

    # ---- time: rounds, each measuring every workload once (so neighbours' load hits all alike)
    per_round: dict[str, list[dict]] = {k: [] for k in workloads}
    for _ in range(args.rounds):
        for name, (fn, _label) in workloads.items():
            slow = name == "torch_cka_loop"
            per_round[name].append(measure(fn, device=device, warmup=1 if slow else 2, reps=1 if slow else args.reps))
    results = {}
    for name, rounds in per_round.items():
        meds = sorted(r["median_s"] for r in rounds)
        results[name] = {
            "impl": workloads[name][1],
            "median_s": statistics.median(meds),
            "min_round_median_s": meds[0],
            "max_round_median_s": meds[-1],
            "round_medians_s": meds,
            "reps_total": sum(r["reps"] for r in rounds),
        }
    med = {k: v["median_s"] for k, v in results.items()}
    ratios = {"torch_cka_loop_over_native": med["torch_cka_loop"] / med["native"]}
    if "pytorch_cka" in med:
        ratios["pytorch_cka_over_native"] = med["pytorch_cka"] / med["native"]
    ratios["torch_batched_over_native"] = med["torch_batched"] / med["native"]
    ratios["native_unbiased_over_biased"] = med["native"] / med["native_biased"]
    targets = {"native_ge_5x_per_pair_loop": ratios["torch_cka_loop_over_native"] >= 5.0}
    if "pytorch_cka_over_native" in ratios:
        targets["native_faster_than_pytorch_cka"] = ratios["pytorch_cka_over_native"] > 1.0
    return {"workloads": results, "ratios": ratios, "targets": targets, "verify": verify}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="results folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    p.add_argument("--n", type=int, default=1000, help="examples")
    p.add_argument("--rounds", type=int, default=3, help="rounds; workloads alternate within a round")
    p.add_argument("--reps", type=int, default=5, help="timed reps per workload per round (loop baseline: 1)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    p.add_argument("--path-rounds", type=int, default=3, help="rounds of the per-shape path timings")
    p.add_argument("--path-reps", type=int, default=2, help="timed reps per path per round")
    p.add_argument("--shapes", default="", help="comma-separated PATH_SHAPES names (default all)")
    p.add_argument("--paths-only", action="store_true", help="skip the baseline workloads, time the paths only")
    args = p.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)

    from cnr_fast import _native
    from cnr_fast.ops import cka as ops_cka

    if not _native.available() or _native.reasons(device):
        sys.exit(f"native CKA cannot run on {device}: {_native.reasons(device)}")

    load_before = os.getloadavg()[0]
    payload = {"workloads": {}, "ratios": {}, "targets": {}, "verify": {"ok": True}}
    if not args.paths_only:
        payload = bench_baselines(args, device)
    only = [x for x in args.shapes.split(",") if x]
    paths = bench_paths(device, args.path_rounds, args.path_reps, only)
    ratios, targets, verify = payload["ratios"], payload["targets"], payload["verify"]
    dev_type = device.split(":")[0]
    if "cnn_all" in paths:
        m = paths["cnn_all"]["median_s"]
        speedup = m["gram"] / m["native"]
        ratios["native_gram_speedup"] = speedup  # torch Gram time / native Gram time, same shapes, same run
        recorded = ops_cka.NATIVE_GRAM_SPEEDUP.get(dev_type)
        chosen = recorded is not None and recorded >= ops_cka.MIN_NATIVE_SPEEDUP
        targets[f"native_ge_{ops_cka.MIN_NATIVE_SPEEDUP}x_torch_gram"] = speedup >= ops_cka.MIN_NATIVE_SPEEDUP
        # the dispatch may use the native Gram on this device only if it measured >= 1.5x here
        targets["native_policy_consistent"] = (not chosen) or speedup >= ops_cka.MIN_NATIVE_SPEEDUP
    targets["dispatch_never_slower"] = all(v["picked_over_best"] <= DISPATCH_SLACK for v in paths.values())
    verify["paths_maxabs"] = max(max(v["maxabs_vs_f64_gram"].values()) for v in paths.values()) if paths else 0.0
    verify["ok"] = bool(verify["ok"]) and verify["paths_maxabs"] <= 1e-4
    payload["paths"] = paths
    config = {"n": args.n, "tap_dims": [list(s) for s in DIMS], "taps_per_model": len(DIMS), "dtype": "float32",
              "device": device, "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
              "path_rounds": args.path_rounds, "path_reps": args.path_reps, "dispatch_slack": DISPATCH_SLACK,
              "native_gram_speedup_recorded": ops_cka.NATIVE_GRAM_SPEEDUP.get(dev_type),
              "min_native_speedup": ops_cka.MIN_NATIVE_SPEEDUP,
              "native": _native.info(),
              # other processes share these cores: the 1-min load average before and after timing
              "loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0]}
    payload = {"config": config, **payload}
    name = "cka_cuda" if device.startswith("cuda") else "cka_cpu"
    path = write_results(name, payload, args.out, device=device)
    print(f"wrote {path}")
    for k, v in payload["workloads"].items():
        print(f"  {k:16s} {v['median_s'] * 1e3:9.2f} ms  ({v['impl']})")
    for name_, v in paths.items():
        times = "  ".join(f"{k} {t * 1e3:8.1f} ms" for k, t in v["median_s"].items())
        print(f"  {name_:12s} n={v['n']:<6d} {times}  picked {v['picked_path']} ({v['picked_over_best']:.2f}x best)")
    for k, v in ratios.items():
        print(f"  {k:34s} {v:7.2f}x")
    print(f"  targets: {targets}")
    print("  verify: " + ", ".join(f"{k}={v:.2e}" for k, v in verify.items() if k.endswith("maxabs")) + f", ok={verify['ok']}")
    if not verify["ok"]:
        sys.exit("verification failed")
    return payload


if __name__ == "__main__":
    main()

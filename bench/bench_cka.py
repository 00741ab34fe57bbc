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
  native_biased    ours, biased estimator (= reference.linear_cka).
  torch_batched    ours, pure-torch fallback (ops/cka.py cka_matrix_torch), unbiased.
Verification (untimed): native (float32 in) vs the pure-torch form on float64 features and vs
pytorch-cka on float64 features (<= 1e-4, after pytorch-cka's [0, 1] clamp); biased vs
reference.linear_cka on the pairs of small taps; reported only: distance to pytorch-cka and
torch-cka fed the float32 features (their uncentred float32 U-statistic loses digits on ReLU data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # torch-cka's progress bar

import torch
from torch import nn

from bench.harness import measure, write_results

DIMS = [(8, 28, 28), (16, 14, 14), (32, 7, 7), (64, 4, 4), (64,)]


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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="results folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    p.add_argument("--n", type=int, default=1000, help="examples")
    p.add_argument("--rounds", type=int, default=3, help="rounds; workloads alternate within a round")
    p.add_argument("--reps", type=int, default=5, help="timed reps per workload per round (loop baseline: 1)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    args = p.parse_args(argv)
    device = args.device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from cka import cka_from_features  # pytorch-cka 1.1.3
    except ImportError:
        cka_from_features = None
        print("pytorch-cka not installed (pip install --no-deps pytorch-cka==1.1.3): its workload is skipped",
              file=sys.stderr)

    from cnr_fast import _native
    from cnr_fast.ops import reference
    from cnr_fast.ops.cka import cka_matrix_native, cka_matrix_torch

    if not _native.available() or _native.reasons(device):
        sys.exit(f"native CKA cannot run on {device}: {_native.reasons(device)}")

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
        # reference.linear_cka (feature-space form, O(N D_a D_b)) on the pairs of small taps only
        small = [i for i, t in enumerate(flat_a) if t.shape[1] <= 1568]
        ref_small = torch.tensor([[reference.linear_cka(flat_a[i].cpu(), flat_b[j].cpu()).item() for j in small]
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
    load_before = os.getloadavg()[0]
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
    config = {"n": args.n, "tap_dims": [list(s) for s in DIMS], "taps_per_model": len(DIMS), "dtype": "float32",
              "device": device, "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
              "native": _native.info(),
              # other processes share these cores: the 1-min load average before and after timing
              "loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0]}
    payload = {"config": config, "workloads": results, "ratios": ratios, "targets": targets, "verify": verify}
    name = "cka_cuda" if device.startswith("cuda") else "cka_cpu"
    path = write_results(name, payload, args.out, device=device)
    print(f"wrote {path}")
    for k, v in results.items():
        print(f"  {k:16s} {v['median_s'] * 1e3:9.2f} ms  ({v['impl']})")
    for k, v in ratios.items():
        print(f"  {k:34s} {v:7.2f}x")
    print(f"  targets: {targets}")
    print("  verify: " + ", ".join(f"{k}={v:.2e}" for k, v in verify.items() if k.endswith("maxabs")) + f", ok={ok}")
    if not verify["ok"]:
        sys.exit("verification failed")
    return payload


if __name__ == "__main__":
    main()

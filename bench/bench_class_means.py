"""Per-class means of a tap over a dataset (eq. 1), streamed in batches: three ways.

  mask_loop            what people write today: per batch, per class, feats[labels == c].sum(0)
  reference_index_add  cnr_fast.ops.spec.class_sums (one index_add_ + bincount per batch)
  triton               cnr_fast.ops._triton.class_sums (one kernel per batch; CUDA only)

Each workload accumulates sums and counts over N samples in batches and divides once; the timed
call covers the whole pass. Ratios are speedups against mask_loop measured in the same run.

    python -m bench.bench_class_means                      # CPU, writes bench/results/class_means_cpu.json
    python -m bench.bench_class_means --device cuda --out $OUT
"""

from __future__ import annotations

import argparse

import torch

from bench.harness import add_common_args, apply_common_args, finish, measure_all, speedups, summary_line
from cnr_fast.ops import spec


def _mask_loop(batches, C, U, device):
    sums = torch.zeros(C, U, dtype=torch.float32, device=device)
    counts = torch.zeros(C, dtype=torch.int64, device=device)
    for xb, yb in batches:
        for c in range(C):
            m = yb == c
            sums[c] += xb[m].float().sum(0)
            counts[c] += m.sum()
    return sums / counts.clamp_min(1)[:, None]


def _with(fn):
    def run(batches, C, U, device):
        sums = torch.zeros(C, U, dtype=torch.float32, device=device)
        counts = torch.zeros(C, dtype=torch.int64, device=device)
        for xb, yb in batches:
            s, n = fn(xb, yb, C)
            sums += s
            counts += n
        return sums / counts.clamp_min(1)[:, None]

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--units", type=int, default=64 * 8 * 8, help="U = C*H*W of the tap (default 64x8x8)")
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    args = p.parse_args(argv)
    dtypes = apply_common_args(args)
    device = args.device
    on_cuda = device.startswith("cuda")
    methods = {"mask_loop": _mask_loop, "reference_index_add": _with(spec.class_sums)}
    if on_cuda:
        from cnr_fast.ops._triton.class_sums import class_sums as triton_class_sums

        methods["triton"] = _with(triton_class_sums)

    workloads = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for C in args.classes:
            # setup (untimed): the tap's features for the whole pass, already on the device
            g = torch.Generator().manual_seed(C)
            x = torch.randn(args.samples, args.units, generator=g).to(device, dtype)
            y = torch.randint(0, C, (args.samples,), generator=g).to(device)
            batches = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, args.samples, args.batch)]
            # verify (untimed, once): every method against float64 means
            ref64 = torch.zeros(C, args.units, dtype=torch.float64, device=device).index_add_(0, y, x.double())
            ref64 /= torch.bincount(y, minlength=C).clamp_min(1)[:, None].double()
            w = {"name": f"C={C} {dtype_name}", "classes": C, "dtype": dtype_name, "results": {}, "max_abs_err": {}}
            for name, fn in methods.items():
                err = (fn(batches, C, args.units, device).double() - ref64).abs().max().item()
                assert err < 1e-4, f"{name} C={C}: max abs err {err} vs float64"
                w["max_abs_err"][name] = err
            # timed interleaved (each round runs every method once): one load for all of them
            w["results"] = measure_all({name: (lambda fn=fn, b=batches, c=C: fn(b, c, args.units, device))
                                        for name, fn in methods.items()}, device=device, reps=args.reps)
            w["speedup_vs_mask_loop"] = speedups(w["results"], "mask_loop")
            workloads.append(w)
            print(summary_line(w["name"], w["results"], w["speedup_vs_mask_loop"]))

    finish(f"class_means_{device.split(':')[0]}", args,
           {"speedup": "mask_loop median / method median (>1 = faster)", "workloads": workloads}, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

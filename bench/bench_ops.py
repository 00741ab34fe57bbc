"""tv_loss and selective_loss, forward + backward: the torch spec ("reference" in the JSON) vs triton (triton on CUDA only).

Workloads are the synthesis stage's: a batch of generated images for TV, and the ResNet-18 (CIFAR
stem) taps L1..L4 with TopK = 1% of each tap's units for the selective loss. The timed call is one
forward and one torch.autograd.grad; ratios are speedups against the reference in the same run.

    python -m bench.bench_ops                      # CPU, writes bench/results/ops_cpu.json
    python -m bench.bench_ops --device cuda --out $OUT
"""

from __future__ import annotations

import argparse

import torch

from bench.harness import add_common_args, apply_common_args, finish, measure_all, speedups, summary_line
from cnr_fast.ops import spec

TV_SHAPES = [(64, 3, 32, 32), (16, 3, 224, 224)]
TAP_CHANNELS_HW = [(64, 32), (128, 16), (256, 8), (512, 4)]  # ResNet-18 CIFAR L1..L4


def _fwd_bwd(loss_fn, make_inputs):
    def run(state):
        inputs = state["inputs"]
        leaves = inputs[0] if isinstance(inputs[0], list) else [inputs[0]]
        v = loss_fn(*inputs)
        return v, torch.autograd.grad(v, leaves)

    def setup():
        return {"inputs": make_inputs()}

    return setup, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--batch", type=int, default=64, help="batch of the selective-loss taps")
    args = p.parse_args(argv)
    dtypes = apply_common_args(args)
    device = args.device
    on_cuda = device.startswith("cuda")

    impls = {"tv_loss": {"reference": spec.tv_loss}, "selective_loss": {"reference": spec.selective_loss}}
    if on_cuda:
        from cnr_fast.ops._triton.selective_loss import selective_loss as t_sel
        from cnr_fast.ops._triton.tv_loss import tv_loss as t_tv

        impls["tv_loss"]["triton"] = t_tv
        impls["selective_loss"]["triton"] = t_sel

    workloads = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for shape in TV_SHAPES:
            g = torch.Generator().manual_seed(0)
            x0 = torch.randn(*shape, generator=g).to(device, dtype).to(memory_format=torch.channels_last)

            def make(x0=x0):
                return (x0.clone().requires_grad_(),)

            workloads.append((f"tv_loss {tuple(shape)} channels_last {dtype_name}", "tv_loss", make, dtype))
        g = torch.Generator().manual_seed(1)
        taps = [torch.randn(args.batch, c, hw, hw, generator=g).to(device, dtype) for c, hw in TAP_CHANNELS_HW]
        fi = [torch.randperm(t[0].numel(), generator=g)[: max(1, t[0].numel() // 100)].to(device) for t in taps]
        ri = [torch.randperm(t[0].numel(), generator=g)[: max(1, t[0].numel() // 100)].to(device) for t in taps]

        def make_sel(taps=taps, fi=fi, ri=ri):
            return ([t.clone().requires_grad_() for t in taps], fi, ri, 0.5)

        workloads.append((f"selective_loss resnet18 L1-L4 B={args.batch} K=1% {dtype_name}", "selective_loss",
                          make_sel, dtype))  # fmt: skip

    out = []
    for name, op, make, dtype in workloads:
        w = {"name": name, "op": op, "results": {}, "max_rel_err": {}}
        outs, timed = {}, {}
        for impl, fn in impls[op].items():
            setup, run = _fwd_bwd(fn, make)
            state = setup()
            v, grads = run(state)  # verify once, untimed
            outs[impl] = (v.detach().double(), [gr.double() for gr in grads])
            timed[impl] = lambda run=run, state=state: run(state)
        w["results"] = measure_all(timed, device=device, reps=args.reps)  # interleaved: one load for all
        rv, rg = outs["reference"]
        tol = 1e-4 if dtype == torch.float32 else 5e-2  # relative to the largest reference value
        for impl, (v, gs) in outs.items():
            err = max(
                [(v - rv).abs().item() / max(1e-12, rv.abs().item())]
                + [(a - b).abs().max().item() / max(1e-12, b.abs().max().item()) for a, b in zip(gs, rg)]
            )
            w["max_rel_err"][impl] = err
            assert err <= tol, f"{name}: {impl} differs from the reference by {err} (relative)"
        w["speedup_vs_reference"] = speedups(w["results"], "reference")
        out.append(w)
        print(summary_line(name, w["results"], w["speedup_vs_reference"]))

    finish(f"ops_{device.split(':')[0]}", args,
           {"speedup": "reference median / method median (>1 = faster)", "workloads": out}, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""--compile against eager on the default model, in one process (issue 30).

Configuration: the default run's model (ResNet-18 at width 0.125, 10 classes, 1x28x28) and training
step (`train.fit`: Adam lr 2e-3, cross-entropy, batch 128) on mnist5k's first training images.

Recorded:

1. `gradients`: one batch's float32 gradients against float64, eager and compiled
   (`train.compile_gradient_error`: max over parameter tensors of max|g - g64| / max|g64|). Eager is
   round-off; a compiled value far above it is a numerical defect of the compiler, not chaos.
2. `drift`: after `--steps` training steps from the same weights, the largest relative weight difference
   of (a) compiled against eager and (b) eager against eager on inputs moved by 1e-6 (the chaos of
   training itself: what any round-off difference grows into over those steps).
3. `time`: the first compiled epoch (compile included) and the steady epoch, eager and compiled,
   repetitions interleaved; `compile_s` = first compiled epoch - median steady compiled epoch (Inductor's
   caches off: a cold compile; it includes fit's gradient check, which compiles the graph first); the ratio
   eager / compiled steady (> 1: compiled faster). Shared machine: ratios within this run only.

    OMP_NUM_THREADS=1 python -m bench.bench_compile --threads 1            # a few minutes on a 2-core CPU
    python -m bench.bench_compile --device cuda                            # the GPU suite's step
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from bench.harness import finish


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="training steps per epoch (batch 128)")
    p.add_argument("--reps", type=int, default=3, help="steady epochs timed per side")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import torch._inductor.config as inductor_config

    inductor_config.force_disable_caches = True  # compile_s is a cold compile, not a cache hit from an earlier run
    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset, to_float
    from cnr_fast.models import build_model
    from cnr_fast.train import ce_loss, compile_gradient_error, fit

    dev = torch.device(a.device)
    cfg = RunConfig()
    ds = load_dataset(cfg.data)
    n = 128 * a.steps
    x, y = to_float(ds.train.x[:n]).to(dev), ds.train.y[:n].to(dev)

    def model():
        torch.manual_seed(0)
        return build_model(cfg.model.arch, ds.num_classes, x.shape[1], x.shape[-1], cfg.model.width).to(dev)

    def batches(shift=None):
        xs = x if shift is None else x + shift
        return lambda epoch: ((xs[i:i + 128], y[i:i + 128]) for i in range(0, n, 128))

    def epoch(m, compile, make):
        t = time.perf_counter()
        fit(m, 1, make, ce_loss, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, device=dev, compile=compile,
            quiet=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def rel(a_, b_):
        return max(float((u.detach().double() - v.detach().double()).abs().max()
                         / v.detach().double().abs().max().clamp_min(1e-30))
                   for u, v in zip(a_.parameters(), b_.parameters()))

    eager, compiled = model(), model()
    first_compiled = epoch(compiled, True, batches())
    epoch(eager, False, batches())
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dev) * 1e-6
    perturbed = model()
    epoch(perturbed, False, batches(noise))
    grads = compile_gradient_error(model(), x[:128])  # after the timed first epoch: it compiles nothing new
    drift = {"compiled_vs_eager": rel(compiled, eager), "eager_perturbed_vs_eager": rel(perturbed, eager),
             "steps": a.steps}

    times = {"eager": [], "compiled": []}
    m_e, m_c = copy.deepcopy(eager), copy.deepcopy(compiled)
    for _ in range(a.reps):
        times["eager"].append(epoch(m_e, False, batches()))
        times["compiled"].append(epoch(m_c, True, batches()))
    steady = {k: statistics.median(v) for k, v in times.items()}
    payload = {"model": f"{cfg.model.arch} width {cfg.model.width}", "input": list(x.shape[1:]), "batch": 128,
               "gradients": grads, "drift": drift,
               "time": {"first_compiled_epoch_s": first_compiled, "steady_epoch_s": steady, "per_rep_s": times,
                        "compile_s": first_compiled - steady["compiled"],
                        "eager_over_compiled": steady["eager"] / steady["compiled"]}}
    print(f"gradients vs float64: eager {grads['eager']:.1e}, compiled {grads['compiled']:.1e}; after {a.steps} "
          f"steps: compiled vs eager {drift['compiled_vs_eager']:.1e}, eager with 1e-6 input noise "
          f"{drift['eager_perturbed_vs_eager']:.1e}; steady epoch eager / compiled "
          f"{payload['time']['eager_over_compiled']:.2f}, compile {payload['time']['compile_s']:.0f} s")
    finish(f"compile_{dev.type}", a, payload, a.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

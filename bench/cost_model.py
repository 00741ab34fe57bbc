"""Cost model of full CNR (paper hyper-parameters) on one H100, and under data parallelism.

Pure arithmetic plus a shape-only trace of each network on the meta device (no data, no real
compute; a few seconds). Writes bench/results/cost_model.json and prints a table.

    python -m bench.cost_model [--mfu 0.5] [--gpus 8] [--out DIR]

Hyper-parameters (paper, Section 3.7 "Implementation Details" and Algorithm 1): detection = one
forward pass over the training data at L1..L4 (K = 12); DCGAN trained 50 epochs on the forget-class
images; B = 64 latents optimised for 500 Adam steps through G, the classifier (eq. 6) and D (eq. 5);
reset = 10 epochs of Adam over the retain data with synthetic images mixed in; stabilisation = 5
retain-only epochs; audit = one feature pass. Batch sizes the paper does not give are cnr-fast's
defaults (cnr_fast/config.py): detection 256, reset 128 retain + 32 synthetic per step (one
forward pass), stabilisation 128, DCGAN batch = cnr-fast's auto rule (64, smaller for small forget
sets), DCGAN ngf = ndf = 32 with cnr-fast's Generator / Discriminator (the image size decides the
depth: 32 px -> 3 up-samplings, 224 px -> 6 up-samplings to 256 px, resized).

Settings: ResNet-18 (CIFAR stem, full width) on CIFAR-10 (50,000 train 3x32x32, forget 1 class =
5,000 images, 45,000 retain, 10,000 test); ViT-B/16 at 224x224 on CUB-200-2011 (the paper's ViT
setting: 5,994 train, 200 classes, ~30 images per class, 5,794 test); and ViT-B/16 at 224 on CIFAR-10
(upsampled), to show how the cost scales with the retain set.

Counting (assumptions, also in the JSON):
- FLOPs: forward F per image from torch.utils.flop_counter.FlopCounterMode on the real module
  (matmuls / convolutions / attention, 2 FLOPs per multiply-add; element-wise ops not counted);
  backward = 2F (the usual convention; in the latent stage the weights are frozen, so autograd
  skips the weight gradients and the real backward is ~1F: the convention over-counts that stage
  by up to a third, see `measured_backward_over_forward`). Per image per epoch for every stage.
- DCGAN step, per image: G forward, D forward on real + fake, D backward on both, D forward on
  the fake again, backward through D and G: 3 Fg + 9 Fd.
- Bytes moved: every op's output written once and read once (2x the output bytes, bf16, traced
  per image on the meta device with a dispatch counter; views excluded), plus per optimiser step
  ~40 bytes per trained parameter (fp32 master weights read, bf16 cast written and read in the
  forward and backward, fp32 gradient written, Adam reads p, g, m, v and writes p, m, v) and
  ~10 bytes per frozen parameter. Caches and re-reads beyond that are ignored.
- H100 SXM: 989 TFLOP/s dense bf16 peak, 3.35 TB/s HBM3. Time per stage = steps x max(compute,
  memory, launch) per step, compute at an assumed MFU (default 0.5; 0.4-0.6 is what well-fed
  convnets / ViTs reach in bf16 with channels_last, lower for 32 px maps at small batches),
  memory at 100% of HBM bandwidth, launch = kernels per step x 5 us (eager PyTorch; CUDA graphs
  or torch.compile bring it to ~1-2 us). Kernels per step are traced (non-view aten ops).
- Bytes are those of eager, unfused execution (every op's output goes through HBM, attention via
  the traced SDPA path); fusion (torch.compile, fused attention / norm kernels) lowers them, so the
  "memory" bound is an upper estimate.
- Required MFU for 60 s: the MFU at which the modelled total (compute at that MFU, the memory and
  launch floors unchanged) is 60 s; inf when the floors alone exceed it.
- Data parallel (N GPUs, one node, NVLink 4): compute and memory split N ways, the launch floor
  does not; each step of a stage that trains weights all-reduces the fp32 gradients (ring:
  2(N-1)/N x 4P bytes at 400 GB/s bus bandwidth + 15 us latency). Detection and the audit need
  one all-reduce of the per-class sums at the end (negligible); latent optimisation splits the B
  latents across GPUs with no communication (weights frozen, eq. 6 is a mean over independent
  images; eval-mode BatchNorm couples nothing), but B = 64 gives each GPU only 64/N images a step.
  Reset / stabilisation under DP must put each GPU's synthetic share in the same local batch as its
  retain share (the one-forward-pass BatchNorm rule). This is what `cnr_fast.dist` (torchrun) does.
- Measured: `bench/results/ddp_cpu.json` (python -m bench.bench_ddp) holds 2-process gloo scaling
  per stage on this project's 2-core CPU; it is copied into the JSON beside the model
  (`measured_cpu_ddp`), with its machine. On CPU the ranks share the cores and memory bandwidth, so
  it checks the split and its overheads, not the GPU numbers above.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

H100 = {"name": "NVIDIA H100 SXM (80 GB)", "peak_bf16_dense_flops": 989e12, "hbm_bytes_per_s": 3.35e12,
        "allreduce_bus_bytes_per_s": 400e9, "allreduce_latency_s": 15e-6, "kernel_launch_s": 5e-6}
DEFAULT_MFU = 0.5
TRAIN_BYTES_PER_PARAM_STEP = 40
FROZEN_BYTES_PER_PARAM_STEP = 10
ADAM_KERNELS = 12  # foreach Adam: a handful of multi-tensor kernels per step
TARGET_S = 60.0

# paper, Section 3.7 / Algorithm 1
PAPER = {"k": 12, "taps": ["L1", "L2", "L3", "L4"], "gan_epochs": 50, "latent_batch": 64, "latent_steps": 500,
         "latent_lr": 0.01, "reset_epochs": 10, "stabilize_epochs": 5, "reset_lr": 1e-4, "reset_weight_decay": 1e-4}
# cnr-fast defaults where the paper is silent
DEFAULTS = {"detect_batch": 256, "reset_batch": 128, "reset_synth_batch": 32, "stabilize_batch": 128,
            "audit_batch": 256, "gan_ngf": 32, "latent_dim": 100}


@dataclass(frozen=True)
class Setting:
    name: str
    arch: str
    dataset: str
    image_size: int
    channels: int
    num_classes: int
    n_train: int
    n_test: int
    forget_classes: int = 1

    @property
    def n_forget(self) -> int:
        return self.n_train * self.forget_classes // self.num_classes

    @property
    def n_retain(self) -> int:
        return self.n_train - self.n_forget


SETTINGS = [
    Setting("resnet18_cifar10", "resnet18", "cifar10", 32, 3, 10, 50_000, 10_000),
    Setting("vit_b16_cub200_224", "vit_b16", "cub200", 224, 3, 200, 5_994, 5_794),
    Setting("vit_b16_cifar10_224", "vit_b16", "cifar10 (resized to 224)", 224, 3, 10, 50_000, 10_000),
]


# ------------------------------------------------------------------------------------ hand formulas
def conv2d_flops(cin: int, cout: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Forward FLOPs of one convolution for one image: 2 * Cin/groups * Cout * k * k * Hout * Wout."""
    return 2 * (cin // groups) * cout * k * k * h_out * w_out


def linear_flops(d_in: int, d_out: int, tokens: int = 1) -> int:
    return 2 * d_in * d_out * tokens


# ----------------------------------------------------------------------------- traced network costs
def _counter():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        """Counts non-view aten ops and the bytes of their outputs."""

        def __init__(self):
            super().__init__()
            self.ops, self.bytes = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                self.ops += 1
                for o in out if isinstance(out, (tuple, list)) else [out]:
                    if isinstance(o, torch.Tensor):
                        self.bytes += o.numel() * o.element_size()
            return out

    return OpCounter()


def trace_net(make, input_shape, *, frozen: bool = False) -> dict:
    """Shape-only trace (meta device, bf16) of one network: per-image forward FLOPs and bytes, kernels.

    make() builds the module (called under the meta device). input_shape excludes the batch.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = make().to(torch.bfloat16)
    for p in net.parameters():
        p.requires_grad_(not frozen)
    params = sum(p.numel() for p in net.parameters())
    out = {"params": params, "param_tensors": len(list(net.parameters())), "frozen": frozen}
    per_batch = {}
    for b in (1, 2):
        x = torch.randn(b, *input_shape, device="meta", dtype=torch.bfloat16, requires_grad=frozen)
        fc = FlopCounterMode(display=False)
        fwd_c, bwd_c = _counter(), _counter()
        with fc:
            with fwd_c:
                y = net(x)
            flops_f = fc.get_total_flops()
            with bwd_c:
                y.float().sum().backward()
        flops_total = fc.get_total_flops()
        per_batch[b] = {"flops_f": flops_f, "flops_b": flops_total - flops_f, "ops_f": fwd_c.ops,
                        "ops_b": bwd_c.ops, "bytes_f": fwd_c.bytes, "bytes_b": bwd_c.bytes}
        for p in net.parameters():
            p.grad = None
    one, two = per_batch[1], per_batch[2]
    out.update(
        flops_fwd_per_image=two["flops_f"] - one["flops_f"],
        flops_bwd_per_image=two["flops_b"] - one["flops_b"],
        # output bytes that scale with the batch (activations) and the per-step remainder (weight grads)
        act_bytes_fwd_per_image=two["bytes_f"] - one["bytes_f"],
        act_bytes_bwd_per_image=two["bytes_b"] - one["bytes_b"],
        kernels_fwd=one["ops_f"], kernels_bwd=one["ops_b"],
    )
    out["measured_backward_over_forward"] = out["flops_bwd_per_image"] / max(out["flops_fwd_per_image"], 1)
    return out


def trace_setting(s: Setting) -> dict:
    from cnr_fast.cnr.synthesize import Discriminator, Generator
    from cnr_fast.models import build_model

    shape = (s.channels, s.image_size, s.image_size)
    nets = {
        "classifier": trace_net(lambda: build_model(s.arch, s.num_classes, s.channels, s.image_size, 1.0), shape),
        "generator": trace_net(lambda: Generator(DEFAULTS["latent_dim"], s.channels, s.image_size,
                                                 DEFAULTS["gan_ngf"]), (DEFAULTS["latent_dim"],)),
        "discriminator": trace_net(lambda: Discriminator(s.channels, s.image_size, DEFAULTS["gan_ngf"]), shape),
    }
    # latent stage: everything frozen, gradients to the input only
    nets["classifier_frozen"] = trace_net(lambda: build_model(s.arch, s.num_classes, s.channels, s.image_size, 1.0),
                                          shape, frozen=True)
    return nets


# ------------------------------------------------------------------------------------------ stages
def gan_batch_size(n_images: int) -> int:
    """cnr-fast's auto rule (cnr_fast/cnr/synthesize.py)."""
    return int(min(64, max(8, n_images // 25)))


def stage_costs(s: Setting, nets: dict) -> dict:
    """{stage: {images, steps, flops, bytes, kernels_per_step, trained_params, dp}} for full CNR."""
    c, g, d = nets["classifier"], nets["generator"], nets["discriminator"]
    F_, Fg, Fd = c["flops_fwd_per_image"], g["flops_fwd_per_image"], d["flops_fwd_per_image"]
    act = lambda n: n["act_bytes_fwd_per_image"]  # noqa: E731
    act_train = lambda n: n["act_bytes_fwd_per_image"] + n["act_bytes_bwd_per_image"]  # noqa: E731
    P, Pg, Pd = c["params"], g["params"], d["params"]
    out = {}

    n = s.n_train
    steps = math.ceil(n / DEFAULTS["detect_batch"])
    out["detect"] = dict(images=n, steps=steps, flops=n * F_, bytes=2 * n * act(c) + steps * FROZEN_BYTES_PER_PARAM_STEP * P,
                         kernels_per_step=c["kernels_fwd"] + 4 * len(PAPER["taps"]), trained_params=0,
                         dp="data parallel (shards of the training set; one all-reduce of the class sums at the end)")

    nf, bs = s.n_forget, gan_batch_size(s.n_forget)
    steps = PAPER["gan_epochs"] * math.ceil(nf / bs)
    imgs = PAPER["gan_epochs"] * nf
    out["gan"] = dict(images=imgs, steps=steps, batch=bs, flops=imgs * (3 * Fg + 9 * Fd),
                      bytes=2 * imgs * (2 * act_train(g) + 3 * act_train(d)) + steps * TRAIN_BYTES_PER_PARAM_STEP * (Pg + Pd),
                      kernels_per_step=g["kernels_fwd"] + g["kernels_bwd"] + 3 * d["kernels_fwd"] + 3 * d["kernels_bwd"]
                      + 2 * ADAM_KERNELS, trained_params=Pg + Pd,
                      dp="data parallel over the GAN batch (all-reduce of G and D gradients every step)")

    B, steps = PAPER["latent_batch"], PAPER["latent_steps"]
    imgs = B * steps
    cf = nets["classifier_frozen"]
    out["latents"] = dict(images=imgs, steps=steps, batch=B, flops=imgs * 3 * (Fg + F_ + Fd),
                          flops_measured_frozen_backward=imgs * (Fg + F_ + Fd + cf["flops_bwd_per_image"] + Fg + Fd),
                          bytes=2 * imgs * (act_train(g) + act_train(cf) + act_train(d))
                          + steps * FROZEN_BYTES_PER_PARAM_STEP * (P + Pg + Pd),
                          kernels_per_step=g["kernels_fwd"] + g["kernels_bwd"] + cf["kernels_fwd"] + cf["kernels_bwd"]
                          + d["kernels_fwd"] + d["kernels_bwd"] + 40 + 1,
                          trained_params=0,
                          dp="split the B latents across GPUs, no communication (frozen weights); "
                             "500 sequential steps of 64/N images each: latency-bound")

    nr, bs, sb = s.n_retain, DEFAULTS["reset_batch"], DEFAULTS["reset_synth_batch"]
    per_epoch_steps = math.ceil(nr / bs)
    steps = PAPER["reset_epochs"] * per_epoch_steps
    imgs = PAPER["reset_epochs"] * (nr + sb * per_epoch_steps)
    out["reset"] = dict(images=imgs, steps=steps, batch=bs + sb, flops=imgs * 3 * F_,
                        bytes=2 * imgs * act_train(c) + steps * (TRAIN_BYTES_PER_PARAM_STEP + 20) * P,  # + L2 pull
                        # + the L2 pull of eq. 7, a Python loop over parameter tensors: ~3 kernels each way
                        kernels_per_step=c["kernels_fwd"] + c["kernels_bwd"] + ADAM_KERNELS + 8 + 6 * c["param_tensors"],
                        trained_params=P,
                        dp="data parallel (gradient all-reduce every step; each GPU's local batch mixes its "
                           "synthetic and retain shares)")

    steps = PAPER["stabilize_epochs"] * math.ceil(nr / DEFAULTS["stabilize_batch"])
    imgs = PAPER["stabilize_epochs"] * nr
    out["stabilize"] = dict(images=imgs, steps=steps, batch=DEFAULTS["stabilize_batch"], flops=imgs * 3 * F_,
                            bytes=2 * imgs * act_train(c) + steps * TRAIN_BYTES_PER_PARAM_STEP * P,
                            kernels_per_step=c["kernels_fwd"] + c["kernels_bwd"] + ADAM_KERNELS + 4, trained_params=P,
                            dp="data parallel (gradient all-reduce every step)")

    n = s.n_test
    steps = math.ceil(n / DEFAULTS["audit_batch"])
    out["audit_features"] = dict(images=n, steps=steps, flops=n * F_,
                                 bytes=2 * n * act(c) + steps * FROZEN_BYTES_PER_PARAM_STEP * P,
                                 kernels_per_step=c["kernels_fwd"] + 10 * 5, trained_params=0,
                                 dp="data parallel (shards of the test split)")
    return out


def allreduce_s(nbytes: float, gpus: int, hw=H100) -> float:
    if gpus <= 1 or nbytes <= 0:
        return 0.0
    return hw["allreduce_latency_s"] + 2 * (gpus - 1) / gpus * nbytes / hw["allreduce_bus_bytes_per_s"]


def stage_time(st: dict, mfu: float, gpus: int = 1, hw=H100) -> dict:
    """Seconds for one stage: steps x max(compute, memory, launch) per step (+ all-reduce under DP)."""
    steps = st["steps"]
    compute = st["flops"] / (hw["peak_bf16_dense_flops"] * mfu) / steps / gpus
    memory = st["bytes"] / hw["hbm_bytes_per_s"] / steps / gpus
    launch = st["kernels_per_step"] * hw["kernel_launch_s"]
    comm = allreduce_s(4 * st["trained_params"], gpus, hw)
    per_step = max(compute, memory, launch) + comm
    bound = max((("compute", compute), ("memory", memory), ("launch", launch)), key=lambda kv: kv[1])[0]
    return {"s": steps * per_step, "bound": bound, "compute_s": steps * compute, "memory_s": steps * memory,
            "launch_s": steps * launch, "allreduce_s": steps * comm}


def evaluate(s: Setting, nets: dict, mfu: float, gpus: int) -> dict:
    stages = stage_costs(s, nets)
    peak = H100["peak_bf16_dense_flops"]
    rows = {}
    for name, st in stages.items():
        one = stage_time(st, mfu)
        many = stage_time(st, mfu, gpus)
        rows[name] = {**st, "intensity_flop_per_byte": st["flops"] / st["bytes"],
                      "h100_s_at_peak": st["flops"] / peak, "h100_s_at_mfu": st["flops"] / (peak * mfu),
                      "h100_s_memory_roofline": st["bytes"] / H100["hbm_bytes_per_s"],
                      "h100_s_model": one["s"], "h100_bound": one["bound"], "h100_launch_floor_s": one["launch_s"],
                      f"dp{gpus}_s_model": many["s"], f"dp{gpus}_speedup": one["s"] / many["s"],
                      f"dp{gpus}_allreduce_s": many["allreduce_s"]}
    total_flops = sum(r["flops"] for r in rows.values())
    total_model = sum(r["h100_s_model"] for r in rows.values())
    total_dp = sum(r[f"dp{gpus}_s_model"] for r in rows.values())
    launch = sum(r["h100_launch_floor_s"] for r in rows.values())
    dominant = max(rows, key=lambda k: rows[k]["h100_s_model"])
    # the MFU at which the modelled total (compute at that MFU, memory and launch floors as they are) is 60 s
    def total_at(m):
        return sum(stage_time(st, m)["s"] for st in stages.values())

    if total_at(1.0) > TARGET_S:
        required_mfu = float("inf")  # the floors (or the FLOPs at 100% MFU) alone exceed 60 s
    else:
        lo, hi = 1e-4, 1.0
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if total_at(mid) > TARGET_S else (lo, mid)
        required_mfu = hi if total_at(lo) > TARGET_S else lo
    return {
        "setting": asdict(s) | {"n_forget": s.n_forget, "n_retain": s.n_retain},
        "networks": nets,
        "stages": rows,
        "total": {"flops": total_flops, "h100_s_at_peak": total_flops / peak, "h100_s_at_mfu": total_flops / (peak * mfu),
                  "h100_s_model": total_model, f"dp{gpus}_s_model": total_dp, f"dp{gpus}_speedup": total_model / total_dp,
                  "launch_floor_s": launch, "dominant_stage": dominant,
                  "dominant_share": rows[dominant]["h100_s_model"] / total_model,
                  "required_mfu_for_60s_one_h100": required_mfu,
                  "required_mfu_for_60s_ignoring_floors": total_flops / (peak * TARGET_S),
                  "min_gpus_for_60s_at_mfu": next((n for n in range(1, 65) if sum(
                      stage_time(st, mfu, n)["s"] for st in stage_costs(s, nets).values()) <= TARGET_S), None)},
    }


def assumptions(mfu: float, gpus: int) -> dict:
    return {"hardware": H100, "mfu": mfu, "mfu_note": "0.4-0.6 for bf16 convnets / ViTs with large enough "
            "batches; 32 px ResNet maps at batch 128-160 and 64-image latent steps are likely lower",
            "memory_efficiency": 1.0, "backward_flops": "2F per image (convention); latent stage really ~1F "
            "(frozen weights), see flops_measured_frozen_backward", "gan_flops_per_image": "3 Fg + 9 Fd",
            "bytes": "2 x bf16 op output bytes per image (written once, read once) + "
            f"{TRAIN_BYTES_PER_PARAM_STEP} B/param/step trained, {FROZEN_BYTES_PER_PARAM_STEP} B/param/step frozen",
            "kernel_launch_s": H100["kernel_launch_s"], "dp_gpus": gpus,
            "allreduce": "ring, fp32 gradients, 400 GB/s bus bandwidth + 15 us per step",
            "paper_hyperparameters": PAPER, "cnr_fast_defaults_where_paper_is_silent": DEFAULTS,
            "not_counted": "original training (not part of unlearning), data loading / augmentation, element-wise "
            "FLOPs, checkpointing, auditing of models other than the unlearned one (original / retrained are cached)",
            "target_s": TARGET_S}


def table(name: str, res: dict, gpus: int) -> str:
    hdr = (f"{name}: {res['setting']['n_train']} train / {res['setting']['n_retain']} retain / "
           f"{res['setting']['n_forget']} forget images, F = {res['networks']['classifier']['flops_fwd_per_image'] / 1e9:.2f} "
           f"GFLOP/img, P = {res['networks']['classifier']['params'] / 1e6:.1f} M")
    lines = [hdr, f"  {'stage':15s} {'TFLOP':>9s} {'GB':>8s} {'FLOP/B':>7s} {'peak s':>8s} {'MFU s':>8s} "
                  f"{'mem s':>7s} {'launch s':>8s} {'model s':>8s} {'bound':>8s} {f'x{gpus} GPUs':>9s}"]
    for k, r in res["stages"].items():
        lines.append(f"  {k:15s} {r['flops'] / 1e12:9.1f} {r['bytes'] / 1e9:8.1f} {r['intensity_flop_per_byte']:7.0f} "
                     f"{r['h100_s_at_peak']:8.2f} {r['h100_s_at_mfu']:8.2f} {r['h100_s_memory_roofline']:7.2f} "
                     f"{r['h100_launch_floor_s']:8.2f} {r['h100_s_model']:8.2f} {r['h100_bound']:>8s} "
                     f"{r[f'dp{gpus}_speedup']:8.2f}x")
    t = res["total"]
    lines.append(f"  {'total':15s} {t['flops'] / 1e12:9.1f} {'':8s} {'':7s} {t['h100_s_at_peak']:8.2f} "
                 f"{t['h100_s_at_mfu']:8.2f} {'':7s} {t['launch_floor_s']:8.2f} {t['h100_s_model']:8.2f} {'':8s} "
                 f"{t[f'dp{gpus}_speedup']:8.2f}x")
    lines.append(f"  dominant stage: {t['dominant_stage']} ({t['dominant_share']:.0%}); under 60 s on one H100 needs "
                 f"MFU >= {t['required_mfu_for_60s_one_h100']:.1%} with the modelled floors (FLOPs alone {t['required_mfu_for_60s_ignoring_floors']:.1%}); "
                 f"GPUs needed at the assumed MFU: {t['min_gpus_for_60s_at_mfu']}")
    return "\n".join(lines)


def measured_cpu_ddp(path: Path) -> dict | None:
    """Per-stage 2-process speed-ups measured by bench.bench_ddp (None until it has run)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    sc = d.get("scaling")
    if not sc:
        return None
    return {"source": str(path.name), "machine": d.get("machine", {}).get("cpu_model"),
            "load_avg_1_5_15": d.get("machine", {}).get("load_avg_1_5_15"), "config": sc["config"],
            "per_stage": {k: {kk: v[kk] for kk in ("speedup_vs_1proc_1thread", "speedup_vs_1proc_2threads",
                                                   "efficiency_2proc")} for k, v in sc["per_stage"].items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU)
    p.add_argument("--gpus", type=int, default=8, help="GPUs for the data-parallel column")
    p.add_argument("--settings", nargs="+", default=[s.name for s in SETTINGS], choices=[s.name for s in SETTINGS])
    p.add_argument("--out", default=None, help="output folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    args = p.parse_args(argv)
    results = {}
    for s in SETTINGS:
        if s.name not in args.settings:
            continue
        results[s.name] = evaluate(s, trace_setting(s), args.mfu, args.gpus)
        print(table(s.name, results[s.name], args.gpus) + "\n")
    out = Path(args.out or os.environ.get("CNR_FAST_BENCH_OUT", Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cost_model.json"
    from bench.harness import machine_info

    payload = {"bench": "cost_model", "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine_info("cpu"),  # a model, not a measurement: the code version is what matters
               "assumptions": assumptions(args.mfu, args.gpus), "settings": results,
               "measured_cpu_ddp": measured_cpu_ddp(Path(__file__).parent / "results" / "ddp_cpu.json")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

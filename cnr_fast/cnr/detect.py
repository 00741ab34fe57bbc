"""Stage 1: class-selective unit detection (Section 3.4, eqs. 1-3).

One streaming pass over the training data accumulates per-class sums at each tap (ops.class_sums),
giving the per-class mean maps mu^l(c). For each forget class c_f, S^l(c_f) = mu^l(c_f) minus the
unweighted centroid of the retain-class means; U_f = TopK(S), U_r = TopK(-S) (ops.selectivity_topk).
Ablations (Table 3): selection by gradient x activation attribution, or at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import dist, ops
from ..data import Split, batches, retain_classes
from ..errors import UserError
from ..models import Taps
from ..profiling import nvtx_range
from ..train import amp_context, progress

SELECTIONS = ("activation", "gradient", "random")


@dataclass
class Detection:
    taps: list[str]
    forget: list[int]
    shapes: dict[str, tuple[int, ...]]  # per-example tap shape, e.g. (C, H, W) or (tokens, dim)
    f_idx: dict[str, torch.Tensor]  # (F, K) flat unit indices, forget-selective
    r_idx: dict[str, torch.Tensor]  # (F, K) flat unit indices, retain-selective
    selectivity: dict[str, torch.Tensor]  # (F, U)
    means: dict[str, torch.Tensor]  # (num_classes, U) class means (activation selection)

    def to_state(self) -> dict:
        return {"taps": self.taps, "forget": self.forget, "shapes": {k: list(v) for k, v in self.shapes.items()},
                "f_idx": self.f_idx, "r_idx": self.r_idx, "selectivity": self.selectivity, "means": self.means}

    def summary(self) -> dict:
        """JSON-able: the chosen units as (c, h, w) / (token, dim) coordinates and their selectivity."""
        out = {}
        for t in self.taps:
            shape = self.shapes[t]
            per_class = {}
            for i, c in enumerate(self.forget):
                fi, ri = self.f_idx[t][i], self.r_idx[t][i]
                per_class[str(c)] = {
                    "forget_units": [list(map(int, torch.unravel_index(j, shape))) for j in fi],
                    "retain_units": [list(map(int, torch.unravel_index(j, shape))) for j in ri],
                    "forget_selectivity_mean": float(self.selectivity[t][i, fi].mean()),
                    "retain_selectivity_mean": float(self.selectivity[t][i, ri].mean()),
                }
            out[t] = {"shape": list(shape), "units": int(torch.tensor(shape).prod()), "classes": per_class}
        return out


def check_k(k: int, shapes: dict[str, tuple[int, ...]]) -> None:
    if k < 1:
        raise UserError(f"K={k} must be at least 1; pass --k 12 (the paper's default)")
    for tap, shape in shapes.items():
        units = int(torch.tensor(shape).prod())
        if k > units // 2:
            raise UserError(
                f"K={k} is larger than half the {units} units of tap {tap} {tuple(shape)}; "
                f"pass --k {max(1, units // 2)} or less"
            )


@torch.no_grad()
def class_means(model, split: Split, taps, num_classes, *, device, batch_size=256, amp=False, quiet=False):
    """Streaming per-class mean maps (eq. 1) at each tap: {tap: (num_classes, U)}, {tap: shape}, counts."""
    model.eval()
    sums, shapes, counts = {}, {}, None
    split = dist.shard(split)  # under torchrun: this rank's share; the sums are all-reduced below
    steps = -(-len(split) // batch_size)
    with Taps(model, taps, detach=True) as t:
        for x, y in progress(batches(split, batch_size, device=device), "detect: class means", steps, quiet):
            with nvtx_range("cnr/detect/forward"), amp_context(device, amp):
                model(x)
            with nvtx_range("cnr/detect/class_sums"):
                for name in taps:
                    f = t[name]  # as the model wrote it (e.g. channels_last): no flattening copy
                    if name not in sums:
                        shapes[name] = tuple(f.shape[1:])
                        sums[name] = ops.class_sums_buffer(f, num_classes)  # one fp32 accumulator per tap
                        if counts is None:
                            counts = torch.zeros(num_classes, dtype=torch.int64, device=f.device)
                    # adds in place on the device: no per-batch zero-fill, temporary or host sync
                    ops.class_sums_add(f, y, sums[name], counts if name == taps[0] else None)
    for name in taps:
        dist.all_reduce_sum_(sums[name])
    dist.all_reduce_sum_(counts)
    # (C, U) in the usual unit order ((C, H, W) / (tokens, dim)) whatever the taps' memory layout
    means = {name: sums[name].reshape(num_classes, -1) / counts.clamp_min(1).unsqueeze(1).float() for name in taps}
    return means, shapes, counts


def gradient_means(model, split: Split, taps, num_classes, forget, *, device, batch_size=256, quiet=False):
    """Per-class means of gradient x activation of each forget logit (gradient-based selection ablation).

    Returns {tap: (F, num_classes, U)}: for forget class i, the class means of F * d logit_{c_i} / dF.
    """
    model.eval()
    sums, counts, shapes = {}, None, {}
    split = dist.shard(split)
    steps = -(-len(split) // batch_size)
    for x, y in progress(batches(split, batch_size, device=device), "detect: gradients", steps, quiet):
        per_forget = {name: [] for name in taps}
        for c in forget:
            with Taps(model, taps) as t:
                logits = model(x)
                feats = [t[n] for n in taps]
                grads = torch.autograd.grad(logits[:, c].sum(), feats)
            for n, f, g in zip(taps, feats, grads):
                shapes[n] = tuple(f.shape[1:])
                s, cnt = ops.class_sums((f.detach() * g).reshape(f.shape[0], -1), y, num_classes)
                per_forget[n].append(s)
        for n in taps:
            s = torch.stack(per_forget[n])
            sums[n] = s if n not in sums else sums[n] + s
        counts = cnt if counts is None else counts + cnt
    for n in taps:
        dist.all_reduce_sum_(sums[n])
    dist.all_reduce_sum_(counts)
    return {n: sums[n] / counts.clamp_min(1).view(1, -1, 1).to(sums[n]) for n in taps}, shapes


def detect(model, train: Split, forget, num_classes, cfg, *, device, amp=False, seed=0, quiet=False) -> Detection:
    """cfg: DetectConfig."""
    if cfg.selection not in SELECTIONS:
        raise UserError(f"unknown unit selection {cfg.selection!r}; choose one of {', '.join(SELECTIONS)}")
    forget = list(forget)
    retain = retain_classes(num_classes, forget)
    taps = list(cfg.taps)
    means, shapes, counts = class_means(model, train, taps, num_classes, device=device, batch_size=cfg.batch_size,
                                        amp=amp, quiet=quiet)
    check_k(cfg.k, shapes)
    retain = [c for c in retain if counts[c] > 0]  # a class with no example has no mean to average
    f_idx, r_idx, sel = {}, {}, {}
    if cfg.selection == "gradient":
        gmeans, _ = gradient_means(model, train, taps, num_classes, forget, device=device,
                                   batch_size=cfg.batch_size, quiet=quiet)
    gen = torch.Generator().manual_seed(seed)
    for t in taps:
        with nvtx_range("cnr/detect/selectivity_topk"):
            s, fi, ri = ops.selectivity_topk(means[t], forget, retain, cfg.k)
        if cfg.selection == "gradient":
            rows = [ops.selectivity_topk(gmeans[t][i], [c], retain, cfg.k) for i, c in enumerate(forget)]
            fi = torch.stack([r[1][0] for r in rows])
            ri = torch.stack([r[2][0] for r in rows])
        elif cfg.selection == "random":
            perm = torch.stack([torch.randperm(s.shape[1], generator=gen)[: 2 * cfg.k] for _ in forget])
            fi, ri = perm[:, : cfg.k].to(s.device), perm[:, cfg.k :].to(s.device)
        f_idx[t], r_idx[t], sel[t] = fi.cpu(), ri.cpu(), s.cpu()
    return Detection(taps, forget, shapes, f_idx, r_idx, sel, {t: m.cpu() for t, m in means.items()})

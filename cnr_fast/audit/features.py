"""Batched activation extraction at the taps L0..L4, the same reduction for every audited model.

One pass over a split (eval mode, no_grad, batches of 256) records, per tap:

* `vec[tap]`  (N, D) float32: the tap flattened per example after a fixed, model-independent
  reduction that caps D at `max_dim` (what the probes, k-NN, SVM, purity and t-SNE see);
* `full[tap]` (N, U) float32, only when `keep_full`: the tap flattened without reduction, up to
  `full_max_dim` units (average-pooled beyond that), what CKA compares;
* `sums[tap]` (C, U) / `counts` (C,): per-class sums of the *unreduced* units (eq. 1 of the
  paper, streamed with ops.class_sums), what the selectivity depth profile reads;
* `logits` (N, C) float32 (forget logits of LogitMask stay -inf: consumers clamp).

The reduction (why and how). Flattened CNN taps are large (mnist5k / resnet18 w0.125: L0 and L1 are
8x28x28 = 6272 units), and a multinomial probe, an SVM and t-SNE on 2000 x 6272 features for five
taps and several models does not fit a one-minute CPU audit. `reduce="pool"` (default) applies
adaptive average pooling to the spatial grid, with the largest square output side s such that
C*s*s <= max_dim (s never above the map's own side), so taps already under the cap are untouched
(at the default max_dim=1024, L4 64x4x4 is exact; L0/L1 8x28x28 -> 8x11x11, L2 16x14x14 -> 16x8x8,
L3 32x7x7 -> 32x5x5). 1024, measured: probes and SVMs on 2000 x 2048 features took 2-3x longer than
on 2000 x 1024 here for the same forget-class accuracy within 0.03. Pooling keeps every channel and
a coarse spatial layout, is deterministic and has no parameter fitted to any model, so it is identical
for every audited model. `reduce="project"` instead multiplies by a fixed Gaussian matrix (seeded by
`seed` and the tap's unit count, scaled by 1/sqrt(max_dim)): distances are preserved in expectation
(Johnson-Lindenstrauss), channels are mixed. `reduce="none"` keeps every unit. ViT taps: encoder
outputs (N, 1+T, D) become the patch grid (N, D, h, w) with the class token dropped for pooling;
the class token is appended back to `vec` (it is what the head reads), so D = D_grid + D_cls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist, ops
from ..data import Split, batches
from ..models import TAP_NAMES, Taps, check_taps

REDUCTIONS = ("pool", "project", "none")
DEFAULT_MAX_DIM = 1024
DEFAULT_FULL_MAX_DIM = 16384


@dataclass
class Features:
    vec: dict[str, torch.Tensor]
    logits: torch.Tensor
    y: torch.Tensor
    full: dict[str, torch.Tensor] = field(default_factory=dict)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: torch.Tensor | None = None

    def class_means(self, tap: str) -> torch.Tensor:
        """(C, U) mean unreduced activation per class (eq. 1); classes without examples give 0."""
        return self.sums[tap] / self.counts.clamp(min=1).unsqueeze(1).to(self.sums[tap].dtype)


def tap_to_map(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A tap output as a (N, C, H, W) map, plus the ViT class token (N, D) or None.

    CNN maps pass through. ViT encoder outputs (N, 1+T, D) with T a square number become the patch
    grid (N, D, sqrt T, sqrt T) with the class token split off. Anything else is treated as a
    (N, U, 1, 1) map.
    """
    if t.ndim == 4:
        return t, None
    if t.ndim == 3:
        n, tok, d = t.shape
        side = math.isqrt(tok - 1) if tok > 1 else 0
        if side * side == tok - 1:
            grid = t[:, 1:, :].transpose(1, 2).reshape(n, d, side, side)
            return grid, t[:, 0, :]
        side = math.isqrt(tok)
        if side * side == tok:
            return t.transpose(1, 2).reshape(n, d, side, side), None
    return t.reshape(t.shape[0], -1, 1, 1), None


def pooled_side(channels: int, side: int, max_dim: int) -> int:
    """Largest s <= side with channels * s * s <= max_dim (at least 1)."""
    s = math.isqrt(max(max_dim // max(channels, 1), 1))
    return max(1, min(side, s))


class Reducer:
    """The fixed per-tap reduction to at most `max_dim` features (see the module docstring)."""

    def __init__(self, mode: str = "pool", max_dim: int = DEFAULT_MAX_DIM, seed: int = 0):
        if mode not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, not {mode!r}")
        self.mode, self.max_dim, self.seed = mode, int(max_dim), int(seed)
        self._proj: dict[tuple[int, str], torch.Tensor] = {}
        self.grids: dict[str, tuple[int, int, int]] = {}  # tap -> (C, h, w) of the map at the head of `vec`

    def __call__(self, t: torch.Tensor, tap: str = "") -> torch.Tensor:
        grid, cls = tap_to_map(t.float())
        n, c, h, w = grid.shape
        if self.mode == "pool" and c * h * w > self.max_dim:
            s = pooled_side(c, max(h, w), self.max_dim)
            grid = F.adaptive_avg_pool2d(grid, (min(s, h), min(s, w)))
        v = grid.reshape(n, -1)
        if self.mode != "project" or v.shape[1] <= self.max_dim:
            self.grids[tap] = tuple(grid.shape[1:])
        if self.mode == "project" and v.shape[1] > self.max_dim:
            v = v @ self._matrix(v.shape[1], tap, v.device)
        if cls is not None:
            v = torch.cat([v, cls], 1)
        return v

    def maps(self, vec: torch.Tensor, tap: str) -> torch.Tensor | None:
        """The (N, C, h, w) spatial map at the head of a reduced `vec` of `tap` (its ViT class token
        dropped); None where the reduction mixed the coordinates (projection) or the map has no extent."""
        shape = self.grids.get(tap)
        if shape is None or shape[1] * shape[2] <= 1:
            return None
        c, h, w = shape
        return vec[:, : c * h * w].reshape(len(vec), c, h, w)

    def _matrix(self, dim: int, tap: str, device) -> torch.Tensor:
        key = (dim, tap)
        if key not in self._proj:
            # seeded by (seed, unit count): the same matrix for every model with this tap shape
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + dim)
            self._proj[key] = torch.randn(dim, self.max_dim, generator=g) / math.sqrt(self.max_dim)
        return self._proj[key].to(device)

    def describe(self) -> str:
        if self.mode == "none":
            return "no reduction (every unit of every tap)"
        if self.mode == "pool":
            return f"adaptive average pooling of each tap's spatial grid to at most {self.max_dim} features"
        return f"fixed Gaussian random projection of each tap to {self.max_dim} features (seed {self.seed})"


def full_units(t: torch.Tensor, full_max_dim: int) -> torch.Tensor:
    """Unreduced flattening (ViT: the patch grid then the class token), pooled only past full_max_dim."""
    return Reducer("pool", full_max_dim)(t)


@torch.no_grad()
def extract(
    model: nn.Module,
    split: Split,
    *,
    device,
    taps=TAP_NAMES,
    reducer: Reducer | None = None,
    batch_size: int = 256,
    num_classes: int | None = None,
    class_sums: bool = False,
    keep_full: bool = False,
    full_max_dim: int = DEFAULT_FULL_MAX_DIM,
) -> Features:
    """Run `model` over `split` once and collect the tap features described in the module docstring."""
    taps = list(taps)
    check_taps(taps)
    reducer = reducer or Reducer()
    was_training = model.training
    model.eval()
    vec = {t: [] for t in taps}
    full = {t: [] for t in taps} if keep_full else {}
    sums: dict[str, torch.Tensor] = {}
    counts = None
    logits = []
    whole, split = split, dist.shard(split)  # under torchrun each rank reads its share; gathered below
    try:
        with Taps(model, taps, detach=True) as rec:
            for x, y in batches(split, batch_size, device=device):
                logits.append(model(x).float().cpu())
                for t in taps:
                    raw = rec[t]
                    a = raw.float()
                    vec[t].append(reducer(a, t).cpu())
                    # a CNN map within full_max_dim is its own full_units (flattened in (C, H, W) order):
                    # class sums read it as the model wrote it (dtype, channels_last), without copies
                    fits = raw.ndim == 4 and raw[0].numel() <= full_max_dim
                    fu = full_units(a, full_max_dim) if keep_full or (class_sums and not fits) else None
                    if keep_full:
                        full[t].append(fu.cpu())
                    if class_sums:
                        u = raw if fits else fu
                        if t not in sums:
                            sums[t] = ops.class_sums_buffer(u, num_classes)  # on the device, fp32
                            if counts is None:
                                counts = torch.zeros(num_classes, dtype=torch.int64, device=u.device)
                        # accumulates in place on the device: no per-batch host copy or sync
                        ops.class_sums_add(u, y, sums[t], counts if t == taps[0] else None)
    finally:
        model.train(was_training)
    sums = {t: dist.all_reduce_sum_(s).reshape(s.shape[0], -1).cpu() for t, s in sums.items()}
    counts = dist.all_reduce_sum_(counts).cpu() if counts is not None else None
    # every rank's rows, in the split's order (contiguous shards): a no-op in one process
    cat = lambda xs: dist.gather_rows(torch.cat(xs)) if xs else torch.empty(0)
    return Features(
        vec={t: cat(v) for t, v in vec.items()},
        logits=cat(logits),
        y=whole.y.clone(),
        full={t: cat(v) for t, v in full.items()},
        sums=sums,
        counts=counts,
    )

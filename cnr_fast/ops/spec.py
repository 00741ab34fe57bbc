"""Pure-torch specification of every op: the CPU fallback, the test oracle and the bench baseline.

Shapes: a "unit" is one spatial-channel coordinate (c, h, w) of a CNN tap or one (token, dim)
coordinate of a ViT tap; feature maps are flattened to (N, U) before these ops see them.
"""

from __future__ import annotations

import torch

# Inside the square root of TV, so its gradient stays finite on flat regions (where dx = dy = 0).
TV_EPS = 1e-8

# The dispatched ops this file specifies (backend.py registers each as its "torch" backend; the
# batched CKA's torch form lives with it in cka.py). A new op: its function here and its name in OPS.
OPS = ("class_sums", "class_sums_add", "selectivity_topk", "tv_loss", "selective_loss", "linear_cka")


def class_sums(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums (C, U) in float32 and counts (C,) int64 of one batch; eq. 1 is sums / counts.

    feats: (N, U) any float dtype; labels: (N,) int64 in [0, num_classes).
    """
    feats = feats.reshape(feats.shape[0], -1)
    sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float32, device=feats.device)
    sums.index_add_(0, labels, feats.float())
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    return sums, counts


def class_sums_buffer(feats: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Zeroed float32 accumulator (num_classes, *feats.shape[1:]) for `class_sums_add`, laid out per
    class like feats is per sample (e.g. channels_last for a channels_last map), so that a kernel can
    add into it contiguously. `sums.reshape(num_classes, -1)` is the (C, U) sums in the usual unit order.
    """
    shape = tuple(feats.shape[1:])
    # dims of one sample in memory order (outermost first); dims of equal stride keep their order
    order = sorted(range(len(shape)), key=lambda d: (-feats.stride(d + 1), d))
    buf = torch.zeros((num_classes, *(shape[d] for d in order)), dtype=torch.float32, device=feats.device)
    inv = [0] * len(order)
    for i, d in enumerate(order):
        inv[d] = i + 1
    return buf.permute(0, *inv)


def class_sums_add(
    feats: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor | None = None
) -> None:
    """Streaming form of `class_sums`: add one batch into a persistent accumulator, in place.

    sums: float32 (C, *feats.shape[1:]) or (C, U) (e.g. from `class_sums_buffer`); counts: int64 (C,)
    or None (not counted). No host sync (no bincount, whose CUDA form reads the labels' maximum).
    """
    sums.index_add_(0, labels, feats.reshape(feats.shape[0], *sums.shape[1:]).float())
    if counts is not None:
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))


def selectivity_topk(
    means: torch.Tensor, forget: list[int], retain: list[int], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Selectivity (eqs. 2-3) and TopK units for each forget class.

    means: (C, U) per-class means. Returns S (F, U), forget-selective idx (F, k) = TopK(S),
    retain-selective idx (F, k) = TopK(-S), both sorted by decreasing |S|.
    """
    means = means.float()
    centroid = means[retain].mean(0)  # eq. 2: unweighted mean of the retain class means
    s = means[forget] - centroid  # eq. 3
    f_idx = torch.topk(s, k, dim=1).indices
    r_idx = torch.topk(-s, k, dim=1).indices
    return s, f_idx, r_idx


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of TV(x) = sum_{c,i,j} sqrt((x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2 + eps).

    Summed over the (H-1) x (W-1) pixels that have both neighbours and over channels.
    """
    dx = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dy = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    return torch.sqrt(dx.float() ** 2 + dy.float() ** 2 + TV_EPS).sum(dim=(1, 2, 3)).mean()


def selective_loss(
    feats: list[torch.Tensor], f_idx: list[torch.Tensor], r_idx: list[torch.Tensor], alpha: float
) -> torch.Tensor:
    """Eq. 6: mean over taps of mean over the batch of A(U_f, x) - alpha * A(U_r, x), A of eq. 4.

    feats[l]: (B, U_l) flattened tap activations; f_idx[l], r_idx[l]: (K_l,) unit indices.
    """
    total = feats[0].new_zeros((), dtype=torch.float32)
    for f, fi, ri in zip(feats, f_idx, r_idx):
        f = f.reshape(f.shape[0], -1).float()
        a_f = f[:, fi].mean(1)
        a_r = f[:, ri].mean(1)
        total = total + (a_f - alpha * a_r).mean()
    return total / len(feats)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA (feature-space form) of two (N, D1), (N, D2) feature matrices, in float64."""
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    xy = (y.T @ x).square().sum()
    xx = (x.T @ x).square().sum().sqrt()
    yy = (y.T @ y).square().sum().sqrt()
    return xy / (xx * yy)

"""Grad-CAM (Selvaraju et al. 2017) at a tap, the formula of the pytorch-grad-cam package.

A = tap activation as a (N, C, h, w) map (ViT: the token sequence reshaped to the patch grid, class
token dropped); g = d score / d A with score = the target-class logit (clamped at -1e4, so a
LogitMask -inf logit gives zero gradient and an all-zero map, i.e. "no evidence" instead of nan);
cam = ReLU(sum_c mean_hw(g_c) A_c); per image min-max scaled to [0, 1] (divided by max + 1e-7),
bilinearly resized to the input size (half-pixel centres, as cv2.resize) and min-max scaled again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Taps
from .features import tap_to_map


def _scale(cam: torch.Tensor) -> torch.Tensor:
    flat = cam.reshape(cam.shape[0], -1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / (flat.max(1, keepdim=True).values + 1e-7)
    return flat.reshape(cam.shape)


def gradcam(model: nn.Module, x: torch.Tensor, tap: str, target, *, resize: bool = True) -> torch.Tensor:
    """Maps (N, H, W) in [0, 1] for inputs x (N, C, H, W) and target class(es) (int or (N,) tensor)."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), Taps(model, [tap], detach=False) as rec:
            x = x.detach().requires_grad_(False)
            logits = model(x)
            act = rec[tap]
            tgt = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
            score = logits.clamp(min=-1e4).gather(1, tgt.view(-1, 1)).sum()
            grad = torch.autograd.grad(score, act, allow_unused=True)[0]
    finally:
        model.train(was_training)
    if grad is None:
        grad = torch.zeros_like(act)
    a, _ = tap_to_map(act.detach().float())
    g, _ = tap_to_map(grad.float())
    weights = g.mean((2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(1))
    cam = _scale(cam)
    if resize and cam.shape[-2:] != x.shape[-2:]:
        cam = F.interpolate(cam.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
        cam = _scale(F.relu(cam))  # min-max again after resizing, as pytorch-grad-cam does
    return cam.cpu()


def reaches_map(model: nn.Module, x: torch.Tensor, tap: str) -> bool:
    """Whether the class scores reach the tap's spatial map by gradient, i.e. whether a Grad-CAM map can
    exist there. False at a ViT's last block when the classifier reads the class token alone: its patch
    tokens get no gradient and every map would be blank. (A trained model: a zero-initialised head
    passes no gradient anywhere.)"""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), Taps(model, [tap], detach=False) as rec:
            logits = model(x)
            grad = torch.autograd.grad(logits.sum(), rec[tap], allow_unused=True)[0]
    finally:
        model.train(was_training)
    return grad is not None and bool(tap_to_map(grad.float())[0].abs().sum() > 0)


def gradcam_overlap(original: nn.Module, model: nn.Module, x: torch.Tensor, y, tap: str, *, device,
                    batch_size: int = 64, resize: bool = False) -> float:
    """Mean over examples of the cosine similarity between `model`'s and `original`'s Grad-CAM maps
    for class y (the forget class on forget examples) at `tap`: 1 = the model still looks where the
    original looked for the class; 0 = its evidence lies only where the original's had none.

    Cosine (not Pearson): the maps are non-negative and min-max scaled (their scale does not matter
    to either), and cosine stays defined for a map that is constant zero, which Pearson is not.
    Chance is not 0: two unrelated non-negative maps still overlap, the more so the broader they are.
    Maps are compared on the tap's own grid (resize=False: no interpolation; ViT: the patch grid),
    each flattened.
    Masked logits: a LogitMask model is audited through the model it wraps (its hidden states are
    that model's, untouched; its -inf logit has no gradient, so its own map would be all zero, an
    artefact of the mask, not of the representation). Examples where either model's class-y logit
    is still not finite, or where the original's map is all zero (no reference), are left out; an
    all-zero map of the audited model with a finite logit (no positive evidence anywhere) scores 0.
    NaN when no example is left -- always the case for a ViT at its last block (tap L4): only the class
    token of that block's output reaches the head, so the patch grid gets no gradient and the map is
    zero; use an earlier tap (L3).
    """
    from ..models import LogitMask

    if isinstance(model, LogitMask):
        model = model.model
    if isinstance(original, LogitMask):
        original = original.model
    y = torch.as_tensor(y).long().expand(len(x))
    sims = []
    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
        ok = torch.ones(len(xb), dtype=torch.bool)
        for m in (original, model):
            was = m.training
            m.eval()
            try:
                with torch.no_grad():
                    ok &= torch.isfinite(m(xb).float().gather(1, yb.view(-1, 1)).squeeze(1)).cpu()
            finally:
                m.train(was)
        a = gradcam(original, xb, tap, yb, resize=resize).reshape(len(xb), -1).double()
        b = gradcam(model, xb, tap, yb, resize=resize).reshape(len(xb), -1).double()
        na, nb = a.norm(dim=1), b.norm(dim=1)
        ok &= na > 0
        cos = (a * b).sum(1) / (na * nb).clamp(min=1e-300)  # nb == 0 -> 0
        sims.append(cos[ok])
    sims = torch.cat(sims)
    return float(sims.mean()) if len(sims) else float("nan")

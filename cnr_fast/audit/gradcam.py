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

"""`--weights PATH`: start from a torchvision ImageNet state dict (a local file; nothing is downloaded).

The file is what `torch.save(torchvision.models.resnet18(weights=...).state_dict(), PATH)` writes, in
torchvision's key names, for resnet18/34/50/101 (full width: `--width 1`) or vit_b16 (torchvision's
`vit_b_16`). Loading is safe (`weights_only=True`). What is adapted, and nothing else:

- the classifier head (`fc` / `heads.head`) is left freshly initialised for the dataset's classes;
- grey inputs: the first convolution's RGB filters are summed over the colour channels;
- ViT at another image size: the position embedding is resized (bicubic) to the new patch grid.

A ResNet built from `--weights` keeps torchvision's ImageNet stem (7x7 stride 2 + max-pool) whatever
the image size, since the stem's filters come from the file; pass `--image-size 224` for ImageNet-like
resolution. Any other mismatch (wrong arch, width, truncated or foreign file) is one clear error.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError

PRETRAINED_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "vit_b16")
HEAD_PREFIXES = ("fc.", "heads.head.")
FIRST_CONV = ("conv1.weight", "conv_proj.weight")


def read_weights(path) -> dict[str, torch.Tensor]:
    """The state dict in a --weights file, read as safely as a checkpoint (runs.load_checkpoint)."""
    from ..runs import load_checkpoint

    if not Path(path).is_file():
        raise UserError(f"--weights {str(path)!r} does not exist; pass a torchvision state-dict file saved with "
                        "torch.save(model.state_dict(), PATH)")
    try:
        state, _ = load_checkpoint(path)
    except UserError as e:
        raise UserError(f"--weights: {e}") from None
    return state


def _resize_pos_embedding(pos: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, n_tokens, D): the class token kept, the patch grid resized bicubically."""
    g_old, g_new = math.isqrt(pos.shape[1] - 1), math.isqrt(n_tokens - 1)
    if g_old * g_old != pos.shape[1] - 1 or g_new * g_new != n_tokens - 1:
        raise UserError(f"--weights: cannot resize a position embedding of {pos.shape[1]} tokens to {n_tokens}")
    cls, grid = pos[:, :1], pos[:, 1:]
    grid = grid.reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(g_new, g_new), mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, g_new * g_new, -1)], dim=1)


def load_pretrained(model: torch.nn.Module, path, arch: str, width: float) -> dict:
    """Copy a torchvision state dict into `model` (head excluded); returns {"loaded", "adapted"} key lists."""
    if arch not in PRETRAINED_ARCHS:
        raise UserError(f"--weights is for {', '.join(PRETRAINED_ARCHS)}; got --arch {arch}")
    if arch.startswith("resnet") and width != 1.0:
        raise UserError(f"--weights holds torchvision's full-width {arch}; pass --width 1 (got {width:g})")
    src = read_weights(path)
    own = model.state_dict()
    adapted: list[str] = []
    out: dict[str, torch.Tensor] = {}
    for key, val in src.items():
        if key.startswith(HEAD_PREFIXES) or key not in own:
            continue
        want = own[key].shape
        if key in FIRST_CONV and val.shape[1] == 3 and want[1] == 1:
            val, _ = val.sum(dim=1, keepdim=True), adapted.append(key)
        elif key == "encoder.pos_embedding" and val.shape != want and val.shape[2] == want[2]:
            val, _ = _resize_pos_embedding(val, want[1]), adapted.append(key)
        out[key] = val
    body = [k for k in own if not k.startswith(HEAD_PREFIXES)]
    missing = [k for k in body if k not in out]
    unexpected = [k for k in src if not k.startswith(HEAD_PREFIXES) and k not in own]
    wrong = [f"{k} {tuple(out[k].shape)} vs {tuple(own[k].shape)}" for k in out if out[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{name}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
                 for name, v in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if v]
        raise UserError(f"--weights {str(path)!r} does not fit {arch} ({'; '.join(parts)}); pass the --arch the "
                        "file was saved from (torchvision's resnet18/34/50/101 or vit_b_16 state dict)")
    model.load_state_dict(out, strict=False)
    return {"loaded": len(out), "adapted": adapted}

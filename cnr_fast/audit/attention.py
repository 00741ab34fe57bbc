"""Self-attention of a ViT on class-discriminative patches, per head (the paper's Table 6).

The CNR paper (Table 6, "ViT-B/16 attention head analysis on CUB-200-2011. Showing average attention
weight changes to class-discriminative patches") reports one number per head group (Head 1-3, 4-6,
7-9, 10-12) and a "Global" one for the original model and each method. It does not say which patches
are "class-discriminative", which layer's attention is read, or whose attention (the class token's or
every token's); its caption says "changes" but its "Original Model" row holds values (0.234 ... 0.194),
so the numbers look like attention weights themselves. Our choices, stated once here:

* Attention weights (`attention_maps`): softmax(Q K^T / sqrt(d_head)) of every encoder block, per head,
  (N, heads, T, T) with T = 1 + patches (torchvision) or prefix tokens + patches (timm). They are
  recomputed in a forward hook on each attention module from the very input that module received,
  with the module's own weights: `nn.MultiheadAttention.forward(..., need_weights=True,
  average_attn_weights=False)` (torchvision's ViT, cnr-fast's vit_tiny / vit_b16) or timm's `Attention`
  (qkv, q_norm / k_norm, scale). Eval mode, no grad; every hook is removed and every module's
  training flag restored afterwards, the model's parameters are not touched. Blocks are numbered
  0..L-1 in module order (the order of the encoder's blocks).
* Class-discriminative patches (`discriminative_patches`): per example, the top `top_frac` (default
  25%) patches of the ORIGINAL model's attention rollout (Abnar & Zuidema 2020, "Quantifying Attention
  Flow in Transformers", ACL, arXiv:2005.00928, Section 3): per block A_l = mean over heads of the
  attention, Ã_l = 0.5 A_l + 0.5 I (the residual connection), rows re-normalised to sum to 1, and the
  rollout R = Ã_L Ã_{L-1} ... Ã_1; the patch scores are the class token's row of R over the patch
  tokens (what jacobgil/vit-explain computes with "mean" head fusion and no discarding). Rollout is
  class-agnostic: on forget-class examples (which the original classifies as the forget class) it
  marks the patches the class token -- what the head reads -- draws its information from. A
  class-specific alternative, `method="gradcam"`, takes the top patches of the original's Grad-CAM
  (Selvaraju et al. 2017) for the true class on the INPUT of the last attention block (the
  layer-normed tokens the last attention reads, the target pytorch-grad-cam's ViT example uses,
  `blocks[-1].norm1`): cam = ReLU(sum_c mean_tokens(dlogit_y/da_c) a_c) over the patch tokens. Not the
  tap L4 (the last block's output): only its class token reaches the head, so the gradient on its
  patch tokens, and that Grad-CAM, is zero. Ties (zeros after ReLU) go to the lower patch index. The
  patches are chosen once, from the original, and the same patches are read in every audited model.
* Attention mass (`head_attention_mass`): per head, the sum of the class token's attention weights
  over those patches, averaged over examples, at the LAST block by default: the class token's output
  of the last block is what the classifier head reads, so the last block's class-token attention is
  the final and direct route from patches to the logits; in earlier blocks the class token and the
  patches are already mixtures of many patches. A sum over the set (rather than a per-patch mean) is
  in the range of the paper's numbers (uniform attention puts k/T on k of T tokens: 0.25 for a quarter
  of ViT-B/16's 196 patches; a per-patch mean would be ~1/197). `layer="all"` gives every block.
* Head groups (`attention_head_table`): heads split into `groups` contiguous groups as the paper's
  Head 1-3 .. 10-12 (np.array_split when the count does not divide; at most one group per head),
  "global" = the mean over all heads, and every model's change against the original (model minus
  original). `uniform` = k / T, the mass of attention spread evenly over all tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError

ROLLOUT_SOURCE = ("Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers (ACL), arXiv:2005.00928: "
                  "attention rollout with the residual as 0.5 A + 0.5 I, mean over heads")
METHODS = ("rollout", "gradcam")


def _timm_attention_type():
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:  # timm absent or changed: only torchvision-style attention is supported
        return None
    return Attention


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every self-attention module of `model` in module order: nn.MultiheadAttention
    (torchvision's ViT) or timm's vision_transformer.Attention (exactly that class)."""
    timm_attn = _timm_attention_type()
    mods = [(p, m) for p, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention) or (timm_attn is not None and type(m) is timm_attn)]
    if not mods:
        raise UserError(f"{type(model).__name__} has no attention module cnr-fast can read (nn.MultiheadAttention "
                        "or timm's vision_transformer.Attention): the attention audit is for ViTs")
    return mods


def _num_heads(mod: nn.Module) -> int:
    return int(mod.num_heads)


def _prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patches: 1 (the class token) for torchvision's ViT, timm's num_prefix_tokens."""
    for m in model.modules():
        if hasattr(m, "num_prefix_tokens"):
            if getattr(m, "cls_token", 1) is None:
                raise UserError(f"{type(m).__name__} has no class token (global average pooling): the class "
                                "token's attention this audit reads does not exist")
            return int(m.num_prefix_tokens)
    return 1


def _mha_weights(mod: nn.MultiheadAttention, args, kwargs) -> torch.Tensor:
    names = ("query", "key", "value")
    q, k, v = (args[i] if len(args) > i else kwargs[n] for i, n in enumerate(names))
    extra = {n: kwargs[n] for n in ("key_padding_mask", "attn_mask", "is_causal") if n in kwargs}
    for i, n in ((3, "key_padding_mask"), (5, "attn_mask")):  # positional masks (need_weights is index 4)
        if len(args) > i:
            extra[n] = args[i]
    # module.forward, not module(...): bypasses hooks (ours included), so no recursion
    _, w = mod.forward(q, k, v, need_weights=True, average_attn_weights=False, **extra)
    return w  # (N, heads, L, S), batch first whatever mod.batch_first is


def _timm_weights(mod: nn.Module, args, kwargs) -> torch.Tensor:
    x = args[0] if args else kwargs["x"]
    mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
    if mask is not None or kwargs.get("is_causal", False):
        raise UserError("attention with a mask or causal attention is not supported by the attention audit")
    b, n, _ = x.shape
    qkv = mod.qkv(x).reshape(b, n, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = mod.q_norm(q), mod.k_norm(k)
    return ((q * mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


class _Recorder:
    """Forward hooks on every attention module storing keep(block, weights) per forward pass.

    Eval mode inside (each module's own training flag restored on exit), hooks removed on exit."""

    def __init__(self, model: nn.Module, keep: Callable[[int, torch.Tensor], torch.Tensor], blocks=None):
        self.model, self.keep = model, keep
        self.mods = attention_modules(model)
        self.blocks = set(range(len(self.mods))) if blocks is None else set(blocks)
        self.out: dict[int, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        self._modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            for i, (_p, mod) in enumerate(self.mods):
                if i not in self.blocks:
                    continue
                read = _mha_weights if isinstance(mod, nn.MultiheadAttention) else _timm_weights
                self._handles.append(mod.register_forward_hook(self._hook(i, read), with_kwargs=True))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _hook(self, i, read):
        def fn(mod, args, kwargs, _out):
            with torch.no_grad():
                self.out[i] = self.keep(i, read(mod, args, kwargs).float())

        return fn

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m, mode in self._modes:
            m.training = mode


def _batched(model, x, device, batch_size, keep, blocks=None) -> dict[int, torch.Tensor]:
    """Run `model` on x in batches with a _Recorder; {block: cat over batches of keep(block, w) on CPU}."""
    parts: dict[int, list] = {}
    with _Recorder(model, keep, blocks) as rec, torch.no_grad():
        for s in range(0, len(x), batch_size):
            rec.out.clear()
            model(x[s:s + batch_size].to(device))
            for i, t in rec.out.items():
                parts.setdefault(i, []).append(t.cpu())
    return {i: torch.cat(v) for i, v in sorted(parts.items())}


def attention_maps(model: nn.Module, x: torch.Tensor, *, device, batch_size: int = 256) -> dict[int, torch.Tensor]:
    """{block index 0..L-1: (N, heads, T, T) float32 attention weights} of every encoder block of a ViT
    (rows sum to 1; see the module docstring). The model is used as it is (on `device`) and left as it was."""
    return _batched(model, x, device, batch_size, lambda _i, w: w)


def _resolve_layer(layer, n_blocks: int) -> int:
    i = int(layer)
    if not -n_blocks <= i < n_blocks:
        raise UserError(f"layer {layer} does not exist: the model has {n_blocks} attention blocks")
    return i % n_blocks


def attention_rollout(model: nn.Module, x: torch.Tensor, *, device, batch_size: int = 256,
                      head_fusion: str = "mean") -> torch.Tensor:
    """(N, P) float64 attention rollout scores of the patches: the class token's row of
    R = Ã_L ... Ã_1, Ã_l = row-normalised 0.5 A_l + 0.5 I, A_l the head mean (`ROLLOUT_SOURCE`)."""
    if head_fusion != "mean":
        raise ValueError("only head_fusion='mean' (Abnar & Zuidema's) is implemented")
    prefix = _prefix_tokens(model)
    means = _batched(model, x, device, batch_size, lambda _i, w: w.mean(1))  # (N, T, T) per block
    roll = None
    for i in sorted(means):
        a = means[i].double()
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        roll = a if roll is None else a @ roll
    return roll[:, 0, prefix:]


def _top_mask(scores: torch.Tensor, top_frac: float) -> torch.Tensor:
    if not 0 < top_frac <= 1:
        raise ValueError(f"top_frac must be in (0, 1], not {top_frac}")
    n, p = scores.shape
    k = max(1, min(p, round(top_frac * p)))
    # stable descending sort: ties go to the lower patch index, deterministically
    idx = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros(n, p, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask


def last_block_gradcam(model: nn.Module, x: torch.Tensor, y, *, device, batch_size: int = 256) -> torch.Tensor:
    """(N, P) float64 Grad-CAM scores of the patches for class(es) y on the input of the last attention
    block (module docstring); the logit clamped at -1e4 as gradcam.py does (a -inf logit: all zero)."""
    y = torch.as_tensor(y).long().expand(len(x))
    return torch.cat([_last_block_gradcam(model, x[s:s + batch_size].to(device), y[s:s + batch_size])
                      for s in range(0, len(x), batch_size)])


def _last_block_gradcam(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    prefix = _prefix_tokens(model)
    _path, last = attention_modules(model)[-1]
    seen = {}

    def grab(_mod, args, kwargs):
        seen["a"] = args[0] if args else next(iter(kwargs.values()))

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    handle = last.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.enable_grad():
            # the input requires grad so that the graph exists even when the parameters do not
            logits = model(x.detach().requires_grad_(True))
            a = seen["a"]
            score = logits.clamp(min=-1e4).gather(1, y.to(logits.device).view(-1, 1)).sum()
            g = torch.autograd.grad(score, a, allow_unused=True)[0]
    finally:
        handle.remove()
        for m, mode in modes:
            m.training = mode
    a = a.detach()
    g = torch.zeros_like(a) if g is None else g
    if isinstance(last, nn.MultiheadAttention) and not last.batch_first:
        a, g = a.transpose(0, 1), g.transpose(0, 1)  # (T, N, D) -> (N, T, D)
    a, g = a[:, prefix:].double(), g[:, prefix:].double()
    return torch.relu((g.mean(1, keepdim=True) * a).sum(-1)).cpu()


def discriminative_patches(original: nn.Module, x: torch.Tensor, y, *, device, top_frac: float = 0.25,
                           method: str = "rollout", batch_size: int = 256) -> torch.Tensor:
    """(N, P) bool: per example the top round(top_frac * P) patches (at least 1) of the ORIGINAL model.

    method "rollout" (default): attention rollout (`attention_rollout`, Abnar & Zuidema 2020),
    class-agnostic, `y` unused; "gradcam": the original's Grad-CAM for class y on the input of its last
    attention block (`last_block_gradcam`). Patches are numbered row-major over the patch grid (the token order)."""
    if method == "rollout":
        scores = attention_rollout(original, x, device=device, batch_size=batch_size)
    elif method == "gradcam":
        y = torch.as_tensor(y).long().expand(len(x))
        scores = torch.cat([_last_block_gradcam(original, x[s:s + batch_size].to(device), y[s:s + batch_size])
                            for s in range(0, len(x), batch_size)])
    else:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    return _top_mask(scores, top_frac)


def head_attention_mass(model: nn.Module, x: torch.Tensor, patches: torch.Tensor, *, device, layer=-1,
                        batch_size: int = 256) -> torch.Tensor:
    """Per head, the mean over examples of the class token's attention summed over `patches`
    ((N, P) bool, P = the model's patch count).

    layer: a block index (negative from the end; default -1, the last block: see the module docstring)
    -> (heads,) float64; "all" -> (L, heads) float64, every block."""
    n_blocks = len(attention_modules(model))
    prefix = _prefix_tokens(model)
    which = None if layer == "all" else _resolve_layer(layer, n_blocks)
    rows = _batched(model, x, device, batch_size, lambda _i, w: w[:, :, 0, :],  # (n, heads, T)
                    blocks=None if which is None else [which])
    patches = torch.as_tensor(patches, dtype=torch.bool)
    out = []
    for i in sorted(rows):
        r = rows[i][:, :, prefix:].double()
        if r.shape[0] != patches.shape[0] or r.shape[-1] != patches.shape[1]:
            raise ValueError(f"patches has shape {tuple(patches.shape)}, the model gives {r.shape[0]} examples "
                             f"with {r.shape[-1]} patches")
        out.append((r * patches[:, None, :].double()).sum(-1).mean(0))
    return out[0] if which is not None else torch.stack(out)


def head_groups(heads: int, groups: int) -> dict[str, list[int]]:
    """{"Head a-b": 0-based head indices} for heads split into min(groups, heads) contiguous groups."""
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    out = {}
    for g in np.array_split(np.arange(heads), min(groups, heads)):
        a, b = int(g[0]) + 1, int(g[-1]) + 1
        out[f"Head {a}-{b}" if b > a else f"Head {a}"] = [int(h) for h in g]
    return out


def _summary(per_head: np.ndarray, groups: dict[str, list[int]]) -> dict:
    return {"per_head": [float(v) for v in per_head],
            "groups": {name: float(per_head[idx].mean()) for name, idx in groups.items()},
            "global": float(per_head.mean())}


def attention_head_table(models: dict[str, nn.Module], original_name: str, x_forget: torch.Tensor, y_forget, *,
                         device, groups: int = 4, layer=-1, top_frac: float = 0.25, method: str = "rollout",
                         batch_size: int = 256) -> dict:
    """The paper's Table 6 on forget-class examples (JSON-able; definitions in the module docstring).

    Patches are chosen once from models[original_name]; per model: "per_head", "groups" (head-group
    means), "global" (mean over heads) of the class token's attention mass on them at `layer`, and
    "change" (the same minus the original's)."""
    if original_name not in models:
        raise ValueError(f"original_name {original_name!r} is not among the models ({', '.join(models)})")
    original = models[original_name]
    patches = discriminative_patches(original, x_forget, y_forget, device=device, top_frac=top_frac,
                                     method=method, batch_size=batch_size)
    n, p = patches.shape
    k = int(patches[0].sum())
    mods = attention_modules(original)
    n_blocks = len(mods)
    block = _resolve_layer(layer, n_blocks)
    heads = _num_heads(mods[block][1])
    groups_idx = head_groups(heads, groups)
    mass = {}
    for name, model in models.items():
        m = head_attention_mass(model, x_forget, patches, device=device, layer=block, batch_size=batch_size)
        if m.shape[0] != heads:
            raise ValueError(f"model {name!r} has {m.shape[0]} heads at block {block}, the original {heads}")
        mass[name] = m.numpy()
    out_models = {}
    for name, m in mass.items():
        row = _summary(m, groups_idx)
        row["change"] = _summary(m - mass[original_name], groups_idx)
        out_models[name] = row
    return {
        "metric": "class-token attention mass on the original's class-discriminative patches, per head",
        "patches": {"method": method, "source": ROLLOUT_SOURCE if method == "rollout" else
                    ("Grad-CAM (Selvaraju et al. 2017) of the original for the true class on the input "
                                "of the last attention block"),
                    "top_frac": float(top_frac), "k": k, "n_patches": int(p), "from": original_name},
        "layer": block, "n_layers": n_blocks, "heads": heads, "n_examples": int(n),
        "uniform": k / (p + _prefix_tokens(original)),
        "groups": groups_idx,
        "models": out_models,
    }

"""The same architecture with fresh parameters: the shadow models of the membership attacks, Bad Teacher's
incompetent teacher and ZRF's incompetent model all start here."""

from __future__ import annotations

import copy

import torch


def _reset(mod) -> bool:
    # nn.MultiheadAttention names its own `_reset_parameters` (its in_proj weight and bias)
    reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
    if callable(reset):
        reset()
        return True
    return False


def fresh_copy(model, seed: int | None = None):
    """A deep copy of `model` (a LogitMask wrapper dropped) with every module's parameters re-initialised by
    its own reset method (BatchNorm's running statistics back to 0 / 1). seed: drawn on the CPU under that
    seed, so the same seed gives the same weights on any device, and the global RNG is left as it was;
    None: drawn from the global RNG where the model is. PyTorch's module defaults, not an architecture's own
    init (torchvision's ResNets draw kaiming_normal in their constructor); parameters owned by a module with no
    reset method (a ViT's class token and position embedding) keep their values: `not_reset` names them."""
    m = copy.deepcopy(getattr(model, "model", model) if hasattr(model, "forget_mask") else model)
    if seed is None:
        for mod in m.modules():
            _reset(mod)
        return m
    device = next(m.parameters()).device
    m = m.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in m.modules():
            _reset(mod)
    return m.to(device)


def not_reset(model) -> list[str]:
    """The parameters of `model` that fresh_copy leaves as they were (their module has no reset method)."""
    covered = {id(p) for mod in model.modules()
               if callable(getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None))
               for p in mod.parameters(recurse=False)}
    return [n for n, p in model.named_parameters() if id(p) not in covered]


__all__ = ["fresh_copy", "not_reset"]

"""LM: logit masking. Forget logits become -inf at inference; hidden states untouched on purpose.

Masking an already masked model (continual forgetting) masks the union of the classes."""

import copy

from ..models import LogitMask


def run(original, ds, forget, cfg, *, device, quiet=False):
    forget = sorted(set(forget))
    if isinstance(original, LogitMask):
        forget = sorted(set(forget) | set(original.forget_classes()))
        original = original.model
    return LogitMask(copy.deepcopy(original), forget).to(device).eval(), {"logit_mask": list(forget)}

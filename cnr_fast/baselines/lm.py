"""LM: logit masking. Forget logits become -inf at inference; hidden states untouched on purpose."""

import copy

from ..models import LogitMask


def run(original, ds, forget, cfg, *, device, quiet=False):
    return LogitMask(copy.deepcopy(original), forget).to(device).eval(), {"logit_mask": list(forget)}

"""Baseline registry. Every method: fn(original, ds, forget, cfg: RunConfig, *, device, quiet) -> (model, info).

Recipes (all share CNR's reset budget: BaselineConfig, Adam lr 1e-4, weight decay 1e-4, 10 epochs
of the method's own loss + 5 epochs of retain-only stabilisation, except RFS and LM):

- rfs:  retrain from scratch on the retain classes with the original model's training recipe.
- roft: retain-only fine-tuning for the whole 15-epoch budget.
- gau:  gradient ascent on forget batches + descent on retain batches; the ascent term is
        min(CE_forget, ln C), so its gradient vanishes once forget predictions are at chance
        (uniform-prediction CE = ln C): ascent stops by itself instead of wrecking the model.
- kdu:  distillation from the frozen original on retain and forget batches, with the teacher's
        forget-class logits masked out (its renormalised retain distribution), temperature T.
- lm:   logit masking: forget logits set to -inf at inference; weights and hidden states untouched.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserError

METHODS = ("cnr", "rfs", "roft", "gau", "kdu", "lm")


def get(method: str) -> Callable:
    from . import gau, kdu, lm, rfs, roft

    table = {"rfs": rfs.run, "roft": roft.run, "gau": gau.run, "kdu": kdu.run, "lm": lm.run}
    if method not in table:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return table[method]

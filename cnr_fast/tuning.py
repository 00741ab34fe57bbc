"""Choices made on the validation split: one rule for every method (CNR's reset and every baseline).

Where a method's authors leave a step size or strength open, it is chosen here, by the same rule, from
a grid of the same size (4 candidates) wherever the method has one value to choose:

- Adam step size of CNR's reset, `cnr-real`, ROFT, GAU, KDU and RL (`reset.lr` / `baseline.lr` null,
  the default): ADAM_LR_GRID, half-decade steps from 1e-4 (the value these methods ran at, fixed,
  before) to 3e-3. Fine-tuning's usual search ([1e-4, 1e-1] for SGD) holds the same decades for Adam,
  whose steps are larger per unit of lr.
- SalUn's SGD lr: its authors' search range, SALUN_LR_GRID (salun.py).
- SSD's alpha: SSD_ALPHA_GRID, holding the authors' published 10 (ssd.py).
- SCRUB: its authors' two published settings (scrub.py).

score = validation retain accuracy - validation forget accuracy (a forgotten class's retrained
accuracy is 0, so this rewards forgetting and keeping retain accuracy equally); ties keep the earlier
candidate (the smaller step). The test split never takes part. Every candidate's validation scores and
the choice go into the method's info (`validation`, `chosen_on_validation`), which every run JSON and
report carries.

`applied_choice(name)` runs a method at a choice made before: U-LiRA's shadows take the audited run's
choice (each shadow is the method at one setting, as Hayes et al. run it, not a fresh search), and
`ablate`'s variants take full CNR's step size on that seed. Inside it, select_on_validation runs that
candidate only, and still records its validation scores.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from contextvars import ContextVar

from .errors import UserError

_APPLIED: ContextVar[str | None] = ContextVar("applied_choice", default=None)


@contextmanager
def applied_choice(name: str | None):
    """Within this block every validation search runs only the candidate `name` (None: search as usual)."""
    token = _APPLIED.set(name)
    try:
        yield
    finally:
        _APPLIED.reset(token)

ADAM_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3)


def lr_candidates(grid=ADAM_LR_GRID) -> dict:
    return {f"lr={lr:g}": lr for lr in grid}


def select_on_validation(candidates: dict, run_one, ds, forget, device, desc: str, quiet=False):
    """Run `run_one(value)` for each candidate; keep the model with the best validation score.

    Returns (model, info) with info["chosen_on_validation"] (the candidate's name) and
    info["validation"] ({name: {"val_forget_acc", "val_retain_acc", "score"}}).
    """
    from .train import forget_retain_accuracy

    if ds.val is None or len(ds.val) == 0:
        raise UserError(f"{desc}: choosing on validation needs a validation split; pass --val-fraction > 0 "
                        "or set the value in the config")
    applied = _APPLIED.get()
    if applied is not None:
        if applied not in candidates:
            raise ValueError(f"{desc}: the applied choice {applied!r} is not one of its candidates {list(candidates)}")
        candidates = {applied: candidates[applied]}
    best, table = None, {}
    for i, (name, value) in enumerate(candidates.items(), 1):
        if not quiet:
            print(f"  {desc}: candidate {i}/{len(candidates)}: {name}", file=sys.stderr, flush=True)
        model, info = run_one(value)
        acc = forget_retain_accuracy(model, ds.val, forget, device=device)
        score = acc["retain_acc"] - acc["forget_acc"]
        table[str(name)] = {"val_forget_acc": acc["forget_acc"], "val_retain_acc": acc["retain_acc"], "score": score}
        if not quiet:
            print(f"  {desc}: {name}: val forget {acc['forget_acc']:.3f} retain {acc['retain_acc']:.3f}",
                  file=sys.stderr, flush=True)
        if best is None or score > best[0]:
            best = (score, name, model, info)
    _, name, model, info = best
    if not quiet:
        print(f"  {desc}: " + (f"ran at {name}, chosen on validation before" if applied is not None
                               else f"chose {name} on validation"), file=sys.stderr, flush=True)
    return model, {**info, "chosen_on_validation": str(name), "validation": table}


def maybe_tuned_lr(lr: float | None, run_one, ds, forget, device, desc: str, quiet=False):
    """run_one(lr) at the configured lr, or, when it is None, at each ADAM_LR_GRID value, keeping the
    validation choice. Returns (model, info) with info["lr"] set."""
    if lr is not None:
        model, info = run_one(lr)
        return model, {**info, "lr": lr}
    return select_on_validation(lr_candidates(), lambda v: (lambda m, i: (m, {**i, "lr": v}))(*run_one(v)),
                                ds, forget, device, desc, quiet)

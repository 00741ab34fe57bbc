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

The rule (`choose`): among the candidates whose validation retain accuracy stays within a margin of
the original's, the one that forgets most (lowest validation forget accuracy; ties: the higher retain
accuracy, then the earlier candidate, the smaller step). margin = RETAIN_MARGIN_FLOOR or the
validation split's resolution 1 / sqrt(N_retain), whichever is larger (the audit's verdict floors its
margins at the same resolution). When no candidate stays within it, the one that keeps most retain
accuracy is taken and the choice says so (`within_margin` false, a warning on the log): the method
cannot forget here without damage, and the verdict reports the model as damaged. An earlier rule,
retain minus forget accuracy, preferred a collapsed model that forgets to an intact one that forgets
a little less (SSD on one seed of the multiclass run: retain 0.125 chosen over 0.094 + forgetting).
The test split never takes part. Every candidate's validation accuracies, the original's, the margin
and the choice go into the method's info (`validation`, `chosen_on_validation`, `validation_rule`),
which every run JSON and report carries.

`applied_choice(name)` runs a method at a choice made before: U-LiRA's shadows take the audited run's
choice (each shadow is the method at one setting, as Hayes et al. run it, not a fresh search), and
`ablate`'s variants take full CNR's step size on that seed. Inside it, select_on_validation runs that
candidate only, and still records its validation scores.
"""

from __future__ import annotations

import math
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


RETAIN_MARGIN_FLOOR = 0.02  # a retain accuracy loss the rule always tolerates (large validation splits)


def retain_margin(n_retain: int) -> float:
    """The validation rule's margin on retain accuracy for a split with n_retain retain examples."""
    return max(RETAIN_MARGIN_FLOOR, 1.0 / math.sqrt(max(1, n_retain)))


def choose(table: dict, original_retain: float, margin: float) -> tuple[str, bool]:
    """The validation rule on a table {candidate: {"val_forget_acc", "val_retain_acc"}} in candidate order:
    (the chosen name, whether it kept retain accuracy within `margin` of `original_retain`)."""
    if not table:
        raise ValueError("no candidate to choose from")
    order = {name: i for i, name in enumerate(table)}
    kept = [n for n, t in table.items() if t["val_retain_acc"] >= original_retain - margin]
    if kept:
        return min(kept, key=lambda n: (table[n]["val_forget_acc"], -table[n]["val_retain_acc"], order[n])), True
    return min(table, key=lambda n: (-table[n]["val_retain_acc"], table[n]["val_forget_acc"], order[n])), False


def select_on_validation(candidates: dict, run_one, ds, forget, device, desc: str, quiet=False, *, original):
    """Run `run_one(value)` for each candidate; keep the model the validation rule (`choose`) picks.

    original: the model the method starts from (its validation retain accuracy is the rule's reference).
    Returns (model, info) with info["chosen_on_validation"] (the candidate's name), info["validation"]
    ({name: {"val_forget_acc", "val_retain_acc", "score"}}, score = retain - forget, kept for reading) and
    info["validation_rule"] (the original's accuracies, the margin, whether the choice kept within it).
    """
    import torch

    from .train import forget_retain_accuracy

    if ds.val is None or len(ds.val) == 0:
        raise UserError(f"{desc}: choosing on validation needs a validation split; pass --val-fraction > 0 "
                        "or set the value in the config")
    applied = _APPLIED.get()
    if applied is not None:
        if applied not in candidates:
            raise ValueError(f"{desc}: the applied choice {applied!r} is not one of its candidates {list(candidates)}")
        candidates = {applied: candidates[applied]}
    base = forget_retain_accuracy(original, ds.val, forget, device=device)
    n_retain = int((~torch.isin(ds.val.y, torch.as_tensor(list(forget)))).sum())
    margin = retain_margin(n_retain)
    table, models = {}, {}
    for i, (name, value) in enumerate(candidates.items(), 1):
        if not quiet:
            print(f"  {desc}: candidate {i}/{len(candidates)}: {name}", file=sys.stderr, flush=True)
        model, info = run_one(value)
        acc = forget_retain_accuracy(model, ds.val, forget, device=device)
        table[str(name)] = {"val_forget_acc": acc["forget_acc"], "val_retain_acc": acc["retain_acc"],
                            "score": acc["retain_acc"] - acc["forget_acc"]}
        if not quiet:
            print(f"  {desc}: {name}: val forget {acc['forget_acc']:.3f} retain {acc['retain_acc']:.3f}",
                  file=sys.stderr, flush=True)
        # keep only the best so far by the rule (a search holds at most two models at once)
        best, _ = choose(table, base["retain_acc"], margin)
        models = {best: models.get(best) if best != str(name) else (model, info)}
    name, within = choose(table, base["retain_acc"], margin)
    model, info = models[name]
    rule = {"original_val_forget_acc": base["forget_acc"], "original_val_retain_acc": base["retain_acc"],
            "retain_margin": margin, "n_val_retain": n_retain, "within_margin": within}
    if not quiet:
        if applied is not None:
            print(f"  {desc}: ran at {name}, chosen on validation before", file=sys.stderr, flush=True)
        elif within:
            print(f"  {desc}: chose {name} on validation (forgets most of those within {margin:.3f} of the "
                  f"original's retain accuracy {base['retain_acc']:.3f})", file=sys.stderr, flush=True)
    if not within and applied is None:
        print(f"  warning: {desc}: no candidate kept validation retain accuracy within {margin:.3f} of the "
              f"original's {base['retain_acc']:.3f}; took {name}, which keeps most "
              f"({table[name]['val_retain_acc']:.3f}): this method damages the model here",
              file=sys.stderr, flush=True)
    return model, {**info, "chosen_on_validation": str(name), "validation": table, "validation_rule": rule}


def maybe_tuned_lr(lr: float | None, run_one, ds, forget, device, desc: str, quiet=False, *, original):
    """run_one(lr) at the configured lr, or, when it is None, at each ADAM_LR_GRID value, keeping the
    validation choice. Returns (model, info) with info["lr"] set."""
    if lr is not None:
        model, info = run_one(lr)
        return model, {**info, "lr": lr}
    return select_on_validation(lr_candidates(), lambda v: (lambda m, i: (m, {**i, "lr": v}))(*run_one(v)),
                                ds, forget, device, desc, quiet, original=original)

"""Checks before any work that the model is fed as its own pipeline fed it.

A wrong input contract (normalisation, image size, channels, class mapping) does not crash: the model
just scores badly, and every number after it is wrong without a word. Two checks catch it first:

- `bn_mismatch`: the first BatchNorm layer the input reaches keeps the mean and variance of what it
  saw in training (running statistics). Fed the tool's images, its input should have about those
  statistics; per channel, z = |batch mean - running mean| / running std, and the ratio of the batch
  std to the running std. A wrong scale or offset moves them far: the input contract is named as the
  likely cause before any accuracy is looked at.
- `check_model`: the model's accuracy over all classes of the test split, against chance and
  against the accuracy the user says the model has (`expect_acc`), and on the forget classes (an
  original that does not recognise them looks forgotten already).

A failed check stops the run with the likely causes (UserError: one line, exit 2) unless forced.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn

from .data import Split, batches, named_classes
from .errors import UserError
from .models.taps import eval_forward
from .progress import log

# A correctly fed model's first BatchNorm input sits close to its running statistics. Measured
# (bench/results/preflight_calibration.json) on torchvision's resnet18 trained by a plain loop on
# ImageNet-normalised 16 px digits: fed as trained, z 0.02 and spread 1.00-1.01x; fed [-1, 1] instead
# of ImageNet-normalised input, spread 0.46x (z 0.09: the trained stem's weights sum to near zero, so
# the offset hardly shows); resized to 12 / 24 / 32 px, spread 0.90-0.98x (size shows in the accuracy
# instead). A [0, 1] input against ImageNet normalisation is 0.23x by the same arithmetic.
# A user's CNN trained on Normalize(0.2, 0.3) inputs and fed [-1, 1] read z 0.42 and spread 0.64x (a
# fresh-eyes trial, issue 27): the limits sit well inside that and well outside the as-trained readings.
Z_LIMIT = 0.3  # median over channels of |batch mean - running mean| / running std
SCALE_LIMIT = 1.3  # batch std / running std outside [1/1.3, 1.3] (median over channels)
CAUSES = ("the input normalisation (--normalize: the mean/std your pipeline's Normalize used, 0/1 for [0, 1] "
          "inputs with no Normalize, or pm1), "
          "the image size (--image-size: the size you trained at), the channels, or the class mapping "
          "(the printed class table)")


def bn_mismatch(model: nn.Module, split: Split, device, n: int = 512) -> dict | None:
    """Statistics of the input of the first BatchNorm the forward pass reaches, against its running
    statistics, on up to n images of `split`. None when the model has no BatchNorm with running stats."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
           and m.running_mean is not None]
    if not bns or len(split) == 0:
        return None
    seen: dict = {}

    def hook(mod, args):
        if "x" not in seen:
            seen["x"], seen["mod"] = args[0].detach().float(), mod

    x, _ = next(batches(split.subset(torch.arange(min(n, len(split)))), n, device=device))
    eval_forward(model, x, [m.register_forward_pre_hook(hook) for m in bns])
    if "x" not in seen:
        return None
    x, mod = seen["x"], seen["mod"]
    dims = [0] + list(range(2, x.ndim))
    mean, std = x.mean(dim=dims), x.std(dim=dims)
    rstd = (mod.running_var.float() + mod.eps).sqrt()
    z = ((mean - mod.running_mean.float()).abs() / rstd).median().item()
    scale = (std / rstd).median().item()
    name = next((k for k, m in model.named_modules() if m is mod), "?")
    return {"layer": name, "z_mean": z, "std_ratio": scale,
            "mismatch": bool(z > Z_LIMIT or not 1 / SCALE_LIMIT <= scale <= SCALE_LIMIT)}


def overall_accuracy(model: nn.Module, split: Split, device, batch_size: int = 256) -> float:
    correct = 0
    model.eval()
    with torch.no_grad():
        for x, y in batches(split, batch_size, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(split))


EXPECT_SLACK = 0.05  # how far below --expect-acc an accuracy may fall before it stops a run


def chance_limit(num_classes: int) -> float:
    """Accuracy at or below which a classifier is taken as near chance: chance plus a tenth of the way to 1."""
    chance = 1.0 / num_classes
    return chance + 0.1 * (1 - chance)


def check_model(model: nn.Module, ds, device, *, role: str = "original", classes=None, forget=None, absent=None,
                expect_acc: float | None = None, force: bool = False, quiet: bool = False, own: bool = False) -> dict:
    """The checks on `model`, before any work; raises UserError (unless force) where
    - its first BatchNorm's input is far from its running statistics (the input contract, most likely);
    - its test accuracy over `classes` (default all) is near chance, or far below expect_acc;
    - it does not recognise the `forget` classes (an original that looks forgotten already);
    - it recognises the `absent` classes (a reference that was not trained without them: --forget names
      another class than the one the references left out).
    own: a model cnr-fast trained itself (fed its own way by construction; after a short training its
    running statistics have not converged, so the BatchNorm check says nothing there): no BatchNorm
    check, and a problem is a progress-line warning, never a stop. Returns what was measured."""
    split = ds.test if classes is None else ds.test.of_classes(classes)
    bn = None if own else bn_mismatch(model, ds.train, device)
    acc = overall_accuracy(model, split, device)
    n = ds.num_classes if classes is None else len(classes)
    over = "all classes" if classes is None else "its classes"
    found = {"test_accuracy": acc, "chance": 1.0 / n, "first_batchnorm": bn, "expect_acc": expect_acc}
    problems = []
    if bn is not None and bn["mismatch"]:
        problems.append(f"its first BatchNorm ({bn['layer']}) sees inputs {bn['z_mean']:.2f} running std off its "
                        f"training mean and {bn['std_ratio']:.2f}x its spread")
    if acc <= chance_limit(n):
        problems.append(f"its test accuracy over {over} is {acc:.3f}, near chance ({1 / n:.3f})")
    elif expect_acc is not None and acc < expect_acc - EXPECT_SLACK:
        problems.append(f"its test accuracy over {over} is {acc:.3f}, far below the --expect-acc {expect_acc:.3f}")
    limit = chance_limit(ds.num_classes)
    if forget:
        found["forget_accuracy"] = f_acc = overall_accuracy(model, ds.test.of_classes(forget), device)
        if f_acc <= limit:
            problems.append(f"it does not recognise the forget class(es) {named_classes(forget, ds)} (test accuracy "
                            f"{f_acc:.3f}, as if forgotten already)")
    if absent:
        found["forget_accuracy"] = a_acc = overall_accuracy(model, ds.test.of_classes(absent), device)
        if a_acc > limit:
            problems.append(f"it recognises the forget class(es) {named_classes(absent, ds)} (test accuracy {a_acc:.3f}) it "
                            "should never have seen: was it retrained without another class? Check --forget against "
                            "the printed class table")
    found["problems"] = list(problems)
    if bn is None and not own and expect_acc is None and role == "original" and not problems:
        note = (f"the {role} model has no BatchNorm, so its inputs are checked by its accuracy alone: a wrong "
                "normalisation or image size can pass as a weaker model; pass --expect-acc (expect_acc= in Python), "
                "your own test accuracy, to stop on that")
        if quiet:  # from Python, where progress lines are off by default: a warning the caller sees
            import warnings

            warnings.warn(note, UserWarning, stacklevel=3)
        else:
            log(f"note: {note}", quiet)
    log(f"{role}: test accuracy over {over} {acc:.3f}"
        + (f"; first BatchNorm {bn['layer']}: input {bn['z_mean']:.2f} running std off its mean, spread "
           f"{bn['std_ratio']:.2f}x" if bn else ""), quiet)
    if problems and own:
        log(f"warning: the {role} model cnr-fast trained is weak: {'; '.join(problems)}; every number below is "
            "about a model that barely learned (raise --train-epochs or check --lr)", quiet)
    elif problems:
        if len(problems) == 1 and absent and found.get("forget_accuracy", 0.0) > limit:  # the classes, not the input
            msg = f"the {role} model does not fit this run: {problems[0]}"
        else:
            msg = f"the {role} model is not fed as it was trained: {'; '.join(problems)}. Likely: {CAUSES}"
        if not force:
            raise UserError(msg + "; --force runs anyway")
        print(f"cnr-fast: warning (--force): {msg}", file=sys.stderr, flush=True)
    return found


def check_recipe(model: nn.Module, ds, device, *, recipe: str, seed: int, expect_acc: float | None = None,
                 force: bool = False, quiet: bool = False) -> dict:
    """The recipe check of `compare`, before any method runs: the original that `recipe` made for `seed`
    reaches what accuracy on validation (test where there is none)? Near chance, or more than EXPECT_SLACK
    below expect_acc, stops with one line naming the recipe as the likely cause (a warning with force)."""
    split = ds.val if ds.val is not None and len(ds.val) else ds.test
    where = "validation" if split is ds.val else "test"
    acc = overall_accuracy(model, split, device)
    found = {"seed": int(seed), "accuracy": acc, "split": where, "expect_acc": expect_acc, "recipe": recipe}
    problem = None
    if acc <= chance_limit(ds.num_classes):
        problem = f"near chance ({1 / ds.num_classes:.3f})"
    elif expect_acc is not None and acc < expect_acc - EXPECT_SLACK:
        problem = f"far below the --expect-acc {expect_acc:.3f}"
    found["ok"] = problem is None
    if problem is None:
        return found
    fix = ("give your own (--train-script FILE.py:FUNCTION or --originals DIR; train= from Python) or settings that "
           "suit it (--train-epochs, --lr)") if recipe.startswith("cnr-fast's own") else (
           "check that it trains this model and data as your pipeline does")
    line = (f"the original of seed {seed}, made by {recipe}, reaches {acc:.3f} on {where}, {problem}: the recipe "
            f"likely trains this model badly, and methods compared on it say little about yours; {fix}")
    if not force:
        raise UserError(line + ", or pass --force (force=True from Python) to compare on it anyway")
    log(f"warning: {line} (--force: going on)", quiet)
    return found


def check_reference(model: nn.Module, ds, forget, device, *, kind: str, recipe: str, seed: int, force: bool = False,
                    quiet: bool = False) -> dict:
    """compare's check of a retrained reference or null as it is made: it must not recognise the forget classes
    (test accuracy on them at most near chance), else it was not trained without them and every verdict
    against it is wrong. One line naming the recipe, unless force (a warning)."""
    acc = overall_accuracy(model, ds.test.of_classes(list(forget)), device)
    found = {"seed": int(seed), "kind": kind, "forget_accuracy": acc}
    if acc <= chance_limit(ds.num_classes):
        return found
    what = "retrained reference" if kind == "retrained" else "null (second retrained model)"
    line = (f"the {what} of seed {seed}, made by {recipe}, recognises the forget class(es) "
            f"{named_classes(list(forget), ds)} (test accuracy {acc:.3f}): it was not trained without them, and every "
            "verdict against it would be wrong; a training function must train on the `classes` it is given, and a "
            "given reference must be retrained without the --forget classes")
    if not force:
        raise UserError(line)
    log(f"warning: {line} (--force: going on)", quiet)
    return found

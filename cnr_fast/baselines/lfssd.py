"""SSD-LF: loss-free selective synaptic dampening (Foster, Schoepf, Brintrup, "Loss-Free Machine
Unlearning", ICLR 2024 Tiny Papers, arXiv 2402.19308). No training, and no loss: SSD whose importances
come from the model's output instead of the cross-entropy.

The authors publish LFSSD as a two-line change to their SSD code (if-loops/selective-synaptic-dampening,
README.md, "Implementing LFSSD": in the importance function, src/ssd.py `ParameterPerturber.calc_importance`,
`loss = torch.norm(out, p="fro", dim=1).pow(2).mean()` replaces `criterion(out, y)` and
`imp.data += p.grad.data.clone().abs()` replaces `.pow(2)`); everything else is SSD's full-class
pipeline (src/forget_full_class_strategies.py `ssd_tuning`, src/forget_full_class_main.py loaders),
which ssd.py reproduces and this module reuses (ssd.authors_order, ssd.importances, ssd.dampen):

- with the model in eval mode, the importance of every parameter is the absolute value of the gradient
  of a batch's mean squared l2 norm of the output (the logits), summed over the batches and divided by
  their number;
- I_f over the forget data (`forget_train_dl`, unshuffled) and I_D over the whole training set in the
  authors' order (`full_train_dl`: the retain set class by class, then the forget set, unshuffled);
- every parameter with I_f > alpha * I_D is multiplied by min(lambda * I_D / I_f, 1) (`modify_weight`,
  unchanged by LFSSD).

Labels. The importances read none: that is the paper's point. The authors' order of D does: their
loaders build the retain set class by class (`build_retain_forget_sets`), and the order matters as much
here as in SSD, since |gradient of a batch mean| is not the mean of per-example magnitudes. Measured on
sklearn digits (16 px, forget class 2, batch 64): I_D summed over all weights is 9.5e4 in the authors'
order and 5.4e4 in the stored, class-mixed order, and an alpha that forgets with retain test accuracy
0.948 (original 0.954) in the authors' order (3.5) takes it to 0.111 in the mixed order (where alpha 10
is needed): the published alphas hold for class-pure batches. So D is taken in the authors' order, which
reads the retain labels, and the registry entry declares labels. (The SUPREME benchmark,
pedroandreou/supreme-unlearning, src/supreme/utils/unlearning/unlearning_utils.py, shuffles both loaders:
a departure from the authors' code that its comments name.)

Settings. lambda 1 and batch 64: SSD's (forget_full_class_main.py: `"dampening_constant": 1`, `-b`
default 64); LFSSD changes neither. alpha is set per task by the authors; the LFSSD paper's values, as
SUPREME records them (src/supreme/utils/unlearning/unlearn_main.py, the `lfssd` branches, lambda 1
throughout): 5 for full-class CIFAR-20 (20 classes), 10 for full-class CIFAR-100 (100 classes),
PinsFaceRecognition (105 classes) and sub-class CIFAR-20, 3.5 for random forgetting on CIFAR-10, with
ResNet-18 and ViT alike. None of these is for a 10-class full-class task: with class-pure batches the
forget set's own batches are part of D, so I_f / I_D is at most about 1 / (forget share) = 10 here, and
alpha 10 dampens almost nothing (100 of 176,258 weights on digits). So alpha is chosen on validation
(tuning.select_on_validation) from ALPHA_GRID: the three published values and 7.5 between them. Every
candidate's number of dampened weights is recorded. The authors' numbers are for ResNet-18 / ViT on
CIFAR (32 px), not for our models.
"""

from __future__ import annotations

import copy
import sys

import torch

from ._common import trainable_copy
from .ssd import authors_order, choose_alpha, dampen, importances

ALPHA_GRID = (3.5, 5.0, 7.5, 10.0)  # the LFSSD paper's 3.5 / 5 / 10 (unlearn_main.py in SUPREME), 7.5 between
LAMBDA = 1.0  # forget_full_class_main.py "dampening_constant": 1 (and every LFSSD task in SUPREME)
BATCH = 64  # forget_full_class_main.py `-b` default


def output_norm(out, _labels=None):
    """The batch's mean squared l2 norm of the output (README.md: torch.norm(out, p="fro", dim=1).pow(2).mean());
    the labels are not read."""
    return out.square().sum(dim=1).mean()


def lf_importances(model, split, batch_size, device) -> list[torch.Tensor]:
    """Mean over the split's batches (in its order) of |grad(mean squared output norm of the batch)|."""
    return importances(model, split, batch_size, device, objective=output_norm, magnitude=torch.abs)


def candidates(original, ds, forget, *, device, batch_size=BATCH, lam=LAMBDA, quiet=True):
    """fn(alpha) -> (model, info): LFSSD at alpha. The importances are taken once, in eval mode."""
    base = trainable_copy(original, device).eval()
    forget_train, full_train = authors_order(ds.train, forget)
    imp_f = lf_importances(base, forget_train, batch_size, device)
    imp_d = lf_importances(base, full_train, batch_size, device)

    def one(alpha):
        model = copy.deepcopy(base)
        info = dampen(model, imp_d, imp_f, alpha, lam)
        if not quiet:
            print(f"  ssd-lf: alpha {alpha:g}: dampened {info['dampened_params']} of {info['total_params']} "
                  "parameters", file=sys.stderr)
        return model.eval(), {**info, "alpha": alpha, "lambda": lam, "batch_size": batch_size}

    return one


def run(original, ds, forget, cfg, *, device, quiet=False):
    one = candidates(original, ds, forget, device=device, quiet=quiet)
    return choose_alpha(one, ALPHA_GRID, original, ds, forget, device, "ssd-lf", quiet)

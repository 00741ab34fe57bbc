"""RL: random labelling, the literature's baseline (Golatkar et al. CVPR 2020 as run in SalUn's code).

As in OPTML-Group/Unlearn-Saliency, Classification/unlearn/RL.py with no mask (the authors' `RL`
method; SalUn is the same loop with a saliency mask): each epoch one pass over the forget data with
labels drawn uniformly over all classes (afresh each batch), then one pass over the retain data with
their true labels; CE, train mode, every weight moves. SGD, momentum 0.9, weight decay 5e-4,
batch 256, 10 epochs (arg_parser.py defaults, the settings of their CIFAR-10 class-wise runs; the
same loop, budget and settings as our SalUn). The authors search the lr in [1e-4, 1e-1] and publish
no class-wise value: it is chosen on validation from salun.LR_GRID unless baseline.salun_lr is set.

Not to be confused with `cnr-real`, CNR's own reset fed real forget images with random *retain*
labels (a control of CNR's synthesis, in cnr/).
"""

from ..tuning import select_on_validation
from .salun import LR_GRID, random_labelling


def run(original, ds, forget, cfg, *, device, quiet=False):
    lr = cfg.baseline.salun_lr

    def one(v):
        return random_labelling(original, ds, forget, cfg, None, v, device=device, quiet=quiet, desc="rl")

    if lr is not None:
        return one(lr)
    return select_on_validation({f"lr={v:g}": v for v in LR_GRID}, one, ds, forget, device, "rl", quiet,
                                original=original)

"""SSD: selective synaptic dampening (Foster, Schoepf, Brintrup, AAAI 2024). No training.

As the authors' code does (if-loops/selective-synaptic-dampening; src/ssd.py `calc_importance` and
`modify_weight`, src/forget_full_class_strategies.py `ssd_tuning`, src/forget_full_class_main.py):

- with the model in eval mode, the importance of every parameter is the squared gradient of a batch's
  mean cross-entropy (true labels), summed over the batches and divided by their number;
- I_f over the forget data (`forget_train_dl`: the forget class's images, unshuffled) and I_D over the
  whole training set in the authors' order (`full_train_dl` = ConcatDataset(retain_train, forget_train),
  unshuffled, where `build_retain_forget_sets` builds retain_train class by class in class order): so
  each batch of 64 holds nearly one class. The order matters: the square of a batch-mean gradient is
  not the mean of per-example squares, and class-pure batches give larger I_D than class-mixed ones;
- every parameter with I_f > alpha * I_D is multiplied by beta = min(lambda * I_D / I_f, 1).

Settings: lambda 1, batch 64 (`-b` default), alpha 10 for ResNet-18 (5 for ViT), published for
full-class forgetting on CIFAR-20 / CIFAR-100 (20 and 100 classes) and PinsFaceRecognition (105
classes; there alpha 50, lambda 0.1). Their README: "To change alpha and lambda, set them in the
respective forget_..._main.py file per unlearning task" - alpha is a per-task setting. On a 10-class
task the forget class is 10% of the data, and with alpha x share = 1 an exact diagonal Fisher selects
no weight at alpha 10. So alpha is chosen on validation (tuning.select_on_validation) from ALPHA_GRID,
four values from a quarter of the published 10 up to 10 itself; baseline.ssd_alpha fixes it instead.
Every candidate's number of dampened weights is recorded.
"""

import copy

import torch
import torch.nn.functional as F

from .. import dist
from ..data import Split, batches
from ..tuning import select_on_validation
from ._common import trainable_copy

ALPHA_GRID = (2.5, 5.0, 7.5, 10.0)


def authors_order(train: Split, forget) -> tuple[Split, Split]:
    """(forget_train, full_train) as the authors' loaders see them: the forget classes' images (class by
    class), and the retain classes' images class by class in class order followed by the forget set;
    within a class the stored order. Neither is shuffled."""
    forget = sorted(set(int(c) for c in forget))
    classes = sorted(set(int(c) for c in train.y.unique().tolist()))
    retain = [c for c in classes if c not in forget]

    def concat(cs):
        idx = torch.cat([torch.nonzero(train.y == c).flatten() for c in cs]) if cs else torch.zeros(0, dtype=torch.long)
        return train.subset(idx)

    return concat(forget), concat(retain + forget)


def importances(model, split, batch_size, device, *, objective=F.cross_entropy,
                magnitude=torch.square) -> list[torch.Tensor]:
    """Mean over batches of grad(mean CE of the batch)^2, per parameter (the authors' estimator), in
    the split's order (batches are not shuffled). The defaults are SSD's: objective(outputs, labels)
    -> the batch's scalar, and the magnitude taken of each gradient entry; lfssd.py passes its own."""
    params = [p for p in model.parameters()]
    imp = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    n = 0
    for x, y in batches(split, batch_size, device=device):
        model.zero_grad(set_to_none=True)
        # the gradient of the whole batch's objective, SSD's mean CE (under torchrun: shares averaged),
        # then its magnitude (SSD: squared)
        dist.backward(lambda b: objective(model(b[0]), b[1]), (x, y), params)
        for acc, p in zip(imp, params):
            if p.grad is not None:
                acc += magnitude(p.grad.detach().float())
        n += 1
    model.zero_grad(set_to_none=True)
    return [a / max(n, 1) for a in imp]


@torch.no_grad()
def dampen(model, imp_all, imp_forget, alpha: float, lam: float) -> dict:
    changed, total = 0, 0
    for p, i_d, i_f in zip(model.parameters(), imp_all, imp_forget):
        sel = i_f > alpha * i_d
        beta = (lam * i_d / i_f.clamp_min(torch.finfo(torch.float32).tiny)).clamp(max=1.0)
        p[sel] = (p.float()[sel] * beta[sel]).to(p.dtype)
        changed += int(sel.sum())
        total += sel.numel()
    return {"dampened_params": changed, "total_params": total}


def run(original, ds, forget, cfg, *, device, quiet=False):
    import sys

    b = cfg.baseline
    base = trainable_copy(original, device).eval()
    forget_train, full_train = authors_order(ds.train, forget)
    imp_f = importances(base, forget_train, b.ssd_batch_size, device)
    imp_d = importances(base, full_train, b.ssd_batch_size, device)

    def one(alpha):
        model = copy.deepcopy(base)
        info = dampen(model, imp_d, imp_f, alpha, b.ssd_lambda)
        if not quiet:
            print(f"  ssd: alpha {alpha:g}: dampened {info['dampened_params']} of {info['total_params']} parameters",
                  file=sys.stderr)
        return model.eval(), {**info, "alpha": alpha, "lambda": b.ssd_lambda}

    if b.ssd_alpha is not None:
        return one(b.ssd_alpha)
    return choose_alpha(one, ALPHA_GRID, original, ds, forget, device, "ssd", quiet)


def choose_alpha(one, grid, original, ds, forget, device, name, quiet):
    """alpha chosen on validation from `grid` (one(alpha) -> (model, info)), each candidate's number of
    dampened weights recorded beside its scores."""
    counts = {}

    def counted(alpha):
        model, info = one(alpha)
        counts[f"alpha={alpha:g}"] = info["dampened_params"]
        return model, info

    model, info = select_on_validation({f"alpha={a:g}": a for a in grid}, counted, ds, forget, device, name, quiet,
                                       original=original)
    for key, n in counts.items():
        info["validation"][key]["dampened_params"] = n
    return model, info
